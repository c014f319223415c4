//go:build kglbdeps

package kglb

import (
	_ "github.com/fsnotify/fsnotify"
	_ "github.com/hashicorp/go-hclog"
	_ "github.com/hashicorp/hcl/v2"
	_ "github.com/miekg/dns"
	_ "github.com/moby/ipvs"
	_ "github.com/osrg/gobgp/v3/pkg/server"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/vishvananda/netlink"
	_ "github.com/vishvananda/netns"
	_ "github.com/zclconf/go-cty/cty"
	_ "golang.org/x/sys/unix"
)
