//go:build linux

package nstest_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/kglb/kglb/internal/nstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// nsInode identifies the network namespace of the calling thread.
func nsInode() (uint64, error) {
	var st unix.Stat_t
	err := unix.Stat(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), &st)
	return st.Ino, err
}

func TestNewDoAndCleanup(t *testing.T) {
	var path string
	var inside uint64
	t.Run("inner", func(t *testing.T) {
		n := nstest.New(t)
		path = n.Path
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("namespace file: %v", err)
		}
		n.Run(t, func() (err error) {
			inside, err = nsInode()
			return err
		})
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		if st.Ino != inside {
			t.Errorf("Do ran in namespace inode %d, want %d (%s)", inside, st.Ino, path)
		}
		outside, err := nsInode()
		if err != nil {
			t.Fatal(err)
		}
		if outside == inside {
			t.Errorf("test goroutine is inside the namespace after Do")
		}
		lo, err := n.Netlink(t).LinkByName("lo")
		if err != nil {
			t.Fatal(err)
		}
		if lo.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("lo is down in a new namespace")
		}
	})
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("namespace file %s after cleanup: err=%v, want not exist", path, err)
	}
}

func TestDoError(t *testing.T) {
	n := nstest.New(t)
	if err := n.Do(func() error { return os.ErrClosed }); err != os.ErrClosed {
		t.Errorf("Do error = %v, want %v", err, os.ErrClosed)
	}
	err := n.Do(func() error { panic("boom") })
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("panic: boom")) {
		t.Errorf("Do of a panicking func = %v, want a panic error", err)
	}
}

func TestVethRoundTrip(t *testing.T) {
	tests := []struct {
		name       string
		clientAddr string
		serverAddr string
		dial       string
	}{
		{"ipv4", "10.9.0.1/24", "10.9.0.2/24", "10.9.0.2:8080"},
		{"ipv6", "fd09::1/64", "fd09::2/64", "[fd09::2]:8080"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client, server := nstest.New(t), nstest.New(t)
			nstest.Veth(t,
				nstest.End{NS: client, Name: "c0", Addrs: []string{tc.clientAddr}},
				nstest.End{NS: server, Name: "s0", Addrs: []string{tc.serverAddr}})
			server.ServeTCP(t, tc.dial, "hello from server")
			got, err := client.DialRead("tcp", tc.dial)
			if err != nil {
				t.Fatal(err)
			}
			if got != "hello from server" {
				t.Errorf("read %q, want %q", got, "hello from server")
			}
		})
	}
}

func TestListenPacketAndRoutes(t *testing.T) {
	a, b := nstest.New(t), nstest.New(t)
	nstest.Veth(t,
		nstest.End{NS: a, Name: "a0", Addrs: []string{"10.9.1.1/24"}},
		nstest.End{NS: b, Name: "b0", Addrs: []string{"10.9.1.2/24"}})
	// A VIP-like address on b's lo, reached from a through a route via b.
	b.AddLoAddr(t, "192.0.2.10/32")
	a.AddRoute(t, "192.0.2.0/24", "10.9.1.2")
	b.AddRouteDev(t, "198.51.100.0/24", "b0")

	pc := b.ListenPacket(t, "udp", "192.0.2.10:5353")
	var c net.Conn
	a.Run(t, func() (err error) {
		c, err = net.Dial("udp", "192.0.2.10:5353")
		return err
	})
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	pc.SetDeadline(timeoutDeadline())
	k, from, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if string(buf[:k]) != "ping" || from.(*net.UDPAddr).IP.String() != "10.9.1.1" {
		t.Errorf("got %q from %v, want \"ping\" from 10.9.1.1", buf[:k], from)
	}

	routes, err := b.Netlink(t).RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range routes {
		if r.Dst != nil && r.Dst.String() == "198.51.100.0/24" {
			found = true
		}
	}
	if !found {
		t.Errorf("route 198.51.100.0/24 dev b0 missing: %v", routes)
	}
}

func TestSysctl(t *testing.T) {
	n := nstest.New(t)
	const key = "net.ipv4.conf.lo.accept_local"
	before, err := os.ReadFile("/proc/sys/net/ipv4/conf/lo/accept_local")
	if err != nil {
		t.Fatal(err)
	}
	want := "1"
	if bytes.Equal(bytes.TrimSpace(before), []byte("1")) {
		want = "0"
	}
	n.Sysctl(t, key, want)
	if got := n.ReadSysctl(t, key); got != want {
		t.Errorf("%s in namespace = %q, want %q", key, got, want)
	}
	if got := n.ReadSysctl(t, "net/ipv4/conf/lo/accept_local"); got != want {
		t.Errorf("slash form = %q, want %q", got, want)
	}
	after, err := os.ReadFile("/proc/sys/net/ipv4/conf/lo/accept_local")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Errorf("sysctl leaked to the root namespace: %q -> %q", before, after)
	}
}

func TestNamedAndRoot(t *testing.T) {
	name := fmt.Sprintf("kglbt-named-%d", os.Getpid())
	n := nstest.NewNamed(t, name)
	if n.Path != nstest.NetnsDir+"/"+name || n.String() != name {
		t.Errorf("Path %q String %q", n.Path, n.String())
	}
	r := nstest.Root(t)
	var rootIno, hereIno uint64
	r.Run(t, func() (err error) {
		rootIno, err = nsInode()
		return err
	})
	hereIno, err := nsInode()
	if err != nil {
		t.Fatal(err)
	}
	if rootIno != hereIno {
		t.Errorf("Root namespace inode %d, test thread %d", rootIno, hereIno)
	}
}

func timeoutDeadline() time.Time { return time.Now().Add(nstest.DialTimeout) }
