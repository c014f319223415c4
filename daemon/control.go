package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"github.com/hashicorp/go-hclog"
	"github.com/kglb/kglb/config"
	"github.com/kglb/kglb/reload"
	"golang.org/x/net/netutil"
	"golang.org/x/sys/unix"
)

// DefaultControlSocket is where `kglb run` listens for changes and `kglb
// status` and `kglb reload` find it: the unit's RuntimeDirectory.
const DefaultControlSocket = "/run/kglb/control.sock"

// The split of powers: the TCP stats listener (loopback by default, maybe
// scraped from afar) only reads; every request that changes something
// (reload, forced reload) comes through the control socket, a Unix socket
// of mode 0660 that only root and the kglb group can open, and whose
// peer's credentials (SO_PEERCRED) are checked again on each request, so a
// loosened mode does not open it to everyone.

// listeners are the daemon's sockets. Both are bound before READY: a
// daemon that cannot own its addresses does not start, so no one else can
// answer in its name.
type listeners struct {
	stats   net.Listener
	control net.Listener // nil when Options.ControlSocket is empty (tests)
}

// listen binds the stats address and the control socket.
func listen(statsAddr, controlPath string) (*listeners, error) {
	l := &listeners{}
	var err error
	l.stats, err = net.Listen("tcp", statsAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on stats_address %s: %w (is another kglb, or something else, using it? `ss -ltnp 'sport = :%s'` tells)", statsAddr, unwrapOpErr(err), portOf(statsAddr))
	}
	if controlPath != "" {
		l.control, err = listenControl(controlPath)
		if err != nil {
			l.stats.Close()
			return nil, err
		}
	}
	return l, nil
}

// unwrapOpErr drops net.OpError's repetition of the address.
func unwrapOpErr(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

func portOf(addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return p
}

func (l *listeners) close() {
	l.stats.Close()
	if l.control != nil {
		l.control.Close()
	}
}

// listenControl creates the control socket at path, mode 0660, group kglb
// when that group exists and kglb runs as root (as the kglb user, the
// socket gets the user's own group, kglb). A stale socket (nothing
// answers) is replaced; a live one is an error.
func listenControl(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("control socket %s: the path exists and is not a socket; remove it", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: another process answers on it (another kglb?)", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("control socket %s: remove the stale socket: %w", path, err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, unwrapOpErr(err))
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if gid, ok := config.DaemonGID(); ok && os.Geteuid() == 0 {
		if err := os.Chown(path, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("control socket %s: %w", path, err)
		}
	}
	return ln, nil
}

// peer is the process at the other end of a control connection, as the
// kernel reports it (SO_PEERCRED, SO_PEERGROUPS): not what it claims.
type peer struct {
	PID    int32
	UID    uint32
	GID    uint32
	Groups []uint32 // supplementary groups
}

// controlPolicy says who may use the control socket.
type controlPolicy struct {
	uids []uint32 // root and the daemon's own user
	gids []uint32 // the kglb group (and the daemon's own group when not root's)
}

// newControlPolicy allows root, the daemon's own user, and members of the
// kglb group (of the daemon's group, when it runs as a user of its own).
func newControlPolicy() controlPolicy {
	p := controlPolicy{uids: []uint32{0}}
	if uid := uint32(os.Geteuid()); uid != 0 {
		p.uids = append(p.uids, uid)
	}
	if gid := uint32(os.Getegid()); gid != 0 {
		p.gids = append(p.gids, gid)
	}
	if gid, ok := config.DaemonGID(); ok && !slices.Contains(p.gids, uint32(gid)) {
		p.gids = append(p.gids, uint32(gid))
	}
	return p
}

func (p controlPolicy) allows(c peer) bool {
	if slices.Contains(p.uids, c.UID) || slices.Contains(p.gids, c.GID) {
		return true
	}
	for _, g := range c.Groups {
		if slices.Contains(p.gids, g) {
			return true
		}
	}
	return false
}

// peerOf reads the credentials of a Unix connection's peer.
func peerOf(c net.Conn) (peer, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return peer{}, fmt.Errorf("not a unix connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return peer{}, err
	}
	var p peer
	var serr error
	err = raw.Control(func(fd uintptr) {
		var cred *unix.Ucred
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if serr != nil {
			serr = fmt.Errorf("SO_PEERCRED: %w", serr)
			return
		}
		p = peer{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}
		p.Groups, serr = peerGroups(int(fd))
	})
	if err == nil {
		err = serr
	}
	return p, err
}

// peerGroups reads SO_PEERGROUPS: the peer's supplementary groups when it
// connected. (x/sys has no wrapper; the kernel answers ERANGE with the
// size it needs when the buffer is short.)
func peerGroups(fd int) ([]uint32, error) {
	buf := make([]uint32, 64)
	for {
		n := uint32(len(buf) * 4)
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		switch {
		case errno == 0:
			return buf[:n/4], nil
		case errno == syscall.ERANGE && int(n/4) > len(buf):
			buf = make([]uint32, n/4)
		default:
			return nil, fmt.Errorf("SO_PEERGROUPS: %w", errno)
		}
	}
}

type peerKey struct{}

// controlHandler serves the control API: GET /status, POST
// /reload[?force=1] and POST /plan?dir=DIR (which changes nothing). Every request's peer is checked; every request that
// changes something is logged with who asked.
func (d *daemon) controlHandler(policy controlPolicy, log hclog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", d.serveStatus)
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, r *http.Request) {
		force := r.URL.Query().Get("force") == "1" || r.URL.Query().Get("force") == "true"
		p := r.Context().Value(peerKey{}).(peer)
		log.Info("reload requested", "op", "reload", "force", force, "uid", p.UID, "gid", p.GID, "pid", p.PID)
		ctx, cancel := context.WithTimeout(r.Context(), 25*time.Second)
		defer cancel()
		o, err := d.watcher.ReloadWait(ctx, force)
		if err == nil {
			log.Info("reload answered", "op", "reload", "result", o.Result, "uid", p.UID, "pid", p.PID)
		}
		writeReload(w, o.Result, o.Err, err)
	})
	mux.HandleFunc("POST /plan", d.servePlan(log))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := r.Context().Value(peerKey{}).(peer)
		if !ok {
			http.Error(w, "refused: the peer's credentials cannot be read", http.StatusForbidden)
			return
		}
		if !policy.allows(p) {
			log.Warn("control request refused", "method", r.Method, "path", r.URL.Path, "uid", p.UID, "gid", p.GID, "pid", p.PID)
			http.Error(w, "refused: the control socket is for root and the kglb group (uid "+strconv.FormatUint(uint64(p.UID), 10)+" is neither)", http.StatusForbidden)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// ReloadAnswer is the JSON answer of POST /reload on the control socket.
type ReloadAnswer struct {
	// Result is success (applied), unchanged, failure (invalid config) or
	// refused (the delete guard).
	Result reload.Result `json:"result"`
	// Error says why, for failure and refused: `file:line:col: message`
	// lines for an invalid config.
	Error string `json:"error,omitempty"`
}

func writeReload(w http.ResponseWriter, result reload.Result, rerr, err error) {
	w.Header().Set("Content-Type", "application/json")
	a := ReloadAnswer{Result: result}
	code := http.StatusOK
	switch {
	case err != nil:
		a.Error = "reload: " + err.Error()
		code = http.StatusServiceUnavailable
	case rerr != nil:
		// 422: the files are there but kglb will not run them.
		a.Error = rerr.Error()
		code = http.StatusUnprocessableEntity
	}
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(a)
}

// controlServer serves the control API with each connection's peer
// credentials in the request context.
func (d *daemon) controlServer(policy controlPolicy, log hclog.Logger) *http.Server {
	return &http.Server{
		Handler: d.controlHandler(policy, log),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			p, err := peerOf(c)
			if err != nil {
				log.Warn("control connection without credentials", "err", err)
				return ctx
			}
			return context.WithValue(ctx, peerKey{}, p)
		},
	}
}

// readOnly answers 405 to every method that could change something: the
// stats listener reads, the control socket changes.
func readOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "the stats listener is read-only; changes go through the control socket ("+DefaultControlSocket+", `kglb reload`)", http.StatusMethodNotAllowed)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// maxStatsConns bounds the stats listener's open connections: a few
// scrapers and operators need a handful.
const maxStatsConns = 64

// serve serves the stats listener and the control socket until ctx ends.
// The first channel reports a server that stopped on its own; the second
// is closed once both have shut down and released their addresses.
func (d *daemon) serve(ctx context.Context, l *listeners) (<-chan error, <-chan struct{}) {
	done, closed := make(chan error, 2), make(chan struct{})
	servers := []*http.Server{{Handler: readOnly(d.statsHandler())}}
	// Anyone who reaches the stats address may connect: unbounded, idle
	// clients each held a file descriptor (and a goroutine) until the
	// header timeout, and enough of them used up LimitNOFILE, which
	// netlink, the health probes, BGP and config reads share. Past the
	// bound, clients wait in the kernel's backlog.
	lns := []net.Listener{netutil.LimitListener(l.stats, maxStatsConns)}
	if l.control != nil {
		servers = append(servers, d.controlServer(newControlPolicy(), d.log.Named("control")))
		lns = append(lns, l.control)
	}
	served := make(chan struct{}, len(servers))
	for i, srv := range servers {
		srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout = 5*time.Second, 10*time.Second, 30*time.Second
		go func() {
			defer func() { served <- struct{}{} }()
			if err := srv.Serve(lns[i]); !errors.Is(err, http.ErrServerClosed) {
				done <- fmt.Errorf("serve %s: %w", lns[i].Addr(), err)
			}
		}()
	}
	go func() {
		defer close(closed)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for _, srv := range servers {
			srv.Shutdown(sctx)
		}
		for range servers {
			<-served
		}
	}()
	return done, closed
}
