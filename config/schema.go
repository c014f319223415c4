package config

// The schema: every block and attribute the language knows, with an example
// value used in hints. The decoder checks bodies against these tables, and a
// test checks that docs/config.md mentions every entry.

type attrSpec struct {
	name    string
	example string // a valid value, as written in a file
}

type blockSpec struct {
	typ    string
	label  string // the label's meaning ("name", "address", "type"); empty: no label
	single bool   // at most one per parent
	attrs  []attrSpec
	blocks []*blockSpec
}

func (s *blockSpec) attr(name string) (attrSpec, bool) {
	for _, a := range s.attrs {
		if a.name == name {
			return a, true
		}
	}
	return attrSpec{}, false
}

func (s *blockSpec) childIndex(typ string) int {
	for i, b := range s.blocks {
		if b.typ == typ {
			return i
		}
	}
	return -1
}

var daemonSpec = &blockSpec{typ: "daemon", single: true, attrs: []attrSpec{
	{"vip_interface", `"kglb0"`},
	{"vip_mode", `"route"`},
	{"state_dir", `"/var/lib/kglb"`},
	{"stats_address", `"127.0.0.1:5678"`},
	{"resync_interval", `"30s"`},
	{"log_level", `"info"`},
	{"log_format", `"text"`},
	{"on_stop", `"keep"`},
	{"stop_hold", `"5s"`},
	{"max_delete_share", `"50%"`},
	{"settle", `"2s"`},
	{"health_concurrency", `1024`},
	{"health_source", `["192.0.2.10", "2001:db8::10"]`},
	{"tunnel_mark_base", `65536`},
	{"tunnel_mark_count", `16384`},
}}

var neighborSpec = &blockSpec{typ: "neighbor", label: "name", attrs: []attrSpec{
	{"address", `"192.0.2.1"`},
	{"asn", `65000`},
	{"port", `179`},
	{"local_address", `"192.0.2.10"`},
	{"passive", `false`},
	{"multihop_ttl", `0`},
	{"hold_time", `"90s"`},
	{"keepalive", `"30s"`},
	{"connect_retry", `"5s"`},
	{"password_file", `"/etc/kglb/tor-a.secret"`},
	{"password", `(not allowed)`},
	{"families", `["ipv4", "ipv6"]`},
	{"graceful_restart", `false`},
	{"restart_time", `"120s"`},
}}

var bgpSpec = &blockSpec{typ: "bgp", single: true, attrs: []attrSpec{
	{"asn", `65010`},
	{"router_id", `"192.0.2.10"`},
	{"listen_port", `0`},
	{"graceful_shutdown", `false`},
	{"graceful_shutdown_wait", `"5s"`},
}, blocks: []*blockSpec{neighborSpec}}

var realSpec = &blockSpec{typ: "real", label: "address", attrs: []attrSpec{
	{"port", `8080`},
	{"weight", `100`},
	{"upper_threshold", `1000`},
	{"lower_threshold", `800`},
	{"enabled", `true`},
}}

// checkSpec holds every check attribute; checkTypeAttrs says which belong
// to which check type.
var checkSpec = &blockSpec{typ: "check", label: "type", attrs: []attrSpec{
	{"interval", `"5s"`},
	{"timeout", `"2s"`},
	{"rise", `2`},
	{"fall", `3`},
	{"port", `8080`},
	{"tunnel", `false`},
	{"method", `"GET"`},
	{"path", `"/healthz"`},
	{"host", `"www.example.com"`},
	{"sni", `"www.example.com"`},
	{"headers", `{ "X-Probe" = "kglb" }`},
	{"status", `[200, "300-399"]`},
	{"body", `"ok"`},
	{"follow_redirects", `false`},
	{"ca_file", `"/etc/ssl/certs/internal-ca.pem"`},
	{"insecure", `false`},
	{"max_body", `65536`},
	{"proxy_url", `"http://www.example.com/"`},
	{"name", `"www.example.com."`},
	{"type", `"A"`},
	{"transport", `"udp"`},
	{"rcode", `"NOERROR"`},
	{"answer", `"192.0.2.80"`},
	{"message", `"kglb health check"`},
}}

var checkCommon = []string{"interval", "timeout", "rise", "fall", "port", "tunnel"}

var checkTypeAttrs = map[CheckType][]string{
	CheckTCP:    nil,
	CheckHTTP:   {"method", "path", "host", "headers", "status", "body", "follow_redirects", "max_body", "proxy_url"},
	CheckHTTPS:  {"method", "path", "host", "sni", "headers", "status", "body", "follow_redirects", "ca_file", "insecure", "max_body", "proxy_url"},
	CheckDNS:    {"name", "type", "transport", "rcode", "answer"},
	CheckSyslog: {"transport", "message"},
}

var checkTypes = []string{"tcp", "http", "https", "dns", "syslog"}

var degradedSpec = &blockSpec{typ: "degraded", single: true, attrs: []attrSpec{
	{"below", `"75%"`},
	{"med", `200`},
	{"prepend", `2`},
}}

var announceSpec = &blockSpec{typ: "announce", single: true, attrs: []attrSpec{
	{"enabled", `true`},
	{"min_healthy", `"50%"`},
	{"restore_healthy", `"75%"`},
	{"next_hop", `"192.0.2.10"`},
	{"communities", `["65010:100"]`},
	{"large_communities", `["65010:1:2"]`},
	{"med", `100`},
	{"local_pref", `100`},
	{"prepend", `0`},
}, blocks: []*blockSpec{degradedSpec}}

var persistenceSpec = &blockSpec{typ: "persistence", single: true, attrs: []attrSpec{
	{"timeout", `"300s"`},
	{"netmask", `"255.255.255.0"`},
}}

var serviceSpec = &blockSpec{typ: "service", label: "name", attrs: []attrSpec{
	{"vip", `"198.51.100.10"`},
	{"port", `443`},
	{"protocol", `"tcp"`},
	{"fwmark", `10`},
	{"family", `"ipv4"`},
	{"scheduler", `"wrr"`},
	{"flags", `["mh-port"]`},
	{"forward", `"tunnel"`},
	{"one_packet", `false`},
	{"drain", `"30s"`},
	{"weight", `100`},
	{"when_all_down", `"fail_open"`},
	{"enabled", `true`},
	{"description", `"checkout API, team payments"`},
}, blocks: []*blockSpec{realSpec, checkSpec, announceSpec, persistenceSpec}}

// rootSpec is a whole file.
var rootSpec = &blockSpec{typ: "", blocks: []*blockSpec{daemonSpec, bgpSpec, serviceSpec}}
