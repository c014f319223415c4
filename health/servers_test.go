package health

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Servers that behave and misbehave, all on 127.0.0.1:0, all closed at test end.

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func addrOf(a net.Addr) netip.AddrPort { return netip.MustParseAddrPort(a.String()) }

// serve runs handle for each accepted connection and closes the connection when
// handle returns; at test end it closes the listener and every open connection and
// waits for the handlers. The accept loop is itself counted in the WaitGroup, so no
// Add races with the final Wait (the race detector flags that), and a connection
// accepted while the cleanup runs is closed at once rather than missed.
func serve(t testing.TB, handle func(net.Conn)) netip.AddrPort {
	ln := listen(t)
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		conns  = map[net.Conn]struct{}{}
		closed bool
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				c.Close()
				continue
			}
			conns[c] = struct{}{}
			wg.Add(1)
			mu.Unlock()
			go func() {
				defer wg.Done()
				handle(c)
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		closed = true
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return addrOf(ln.Addr())
}

// silent accepts and never answers (until the test ends).
func silent(c net.Conn) { io.Copy(io.Discard, c) }

// reset closes every connection with RST as soon as it is accepted.
func reset(c net.Conn) {
	c.(*net.TCPConn).SetLinger(0)
	c.Close()
}

// readRequest consumes an HTTP request head.
func readRequest(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil || line == "\r\n" {
			return
		}
	}
}

// slowly answers with resp one byte every delay.
func slowly(resp string, delay time.Duration) func(net.Conn) {
	return func(c net.Conn) {
		readRequest(c)
		dribble(c, []byte(resp), delay)
	}
}

// dribble writes b one byte every delay, and stops at the first error (the prober
// gone).
func dribble(c net.Conn, b []byte, delay time.Duration) {
	for i := range b {
		if _, err := c.Write(b[i : i+1]); err != nil {
			return
		}
		time.Sleep(delay)
	}
}

// stall accepts and neither reads nor answers: it holds the connection for hold, or
// until the test ends, and then closes it.
func stall(t testing.TB, hold time.Duration) func(net.Conn) {
	done := t.Context().Done()
	return func(net.Conn) {
		tm := time.NewTimer(hold)
		defer tm.Stop()
		select {
		case <-tm.C:
		case <-done:
		}
	}
}

// garbage answers a request with bytes that are not HTTP.
func garbage(c net.Conn) {
	readRequest(c)
	c.Write([]byte("\x00\x01\x02 this is not HTTP at all\r\n\r\n"))
	c.Close()
}

// huge answers 200 with an endless body, or endless headers.
func huge(headers bool) func(net.Conn) {
	return func(c net.Conn) {
		readRequest(c)
		c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"))
		if !headers {
			c.Write([]byte("\r\n"))
		}
		chunk := make([]byte, 32<<10)
		for i := range chunk {
			chunk[i] = 'x'
		}
		if headers {
			copy(chunk, "X-Long: ")
			chunk[len(chunk)-2], chunk[len(chunk)-1] = '\r', '\n'
		}
		for {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}
}

// closedPort returns a loopback port with nothing listening.
func closedPort(t testing.TB) netip.AddrPort {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := addrOf(ln.Addr())
	ln.Close()
	return a
}

// httpServer serves a small site: / (200 "healthy"), /down (503), /redirect
// (302 to /), /away (302 to another host), /loop (302 to itself), /big (200, 1 MiB).
func httpServer(t testing.TB, tlsConf *tls.Config) netip.AddrPort {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("X-Host-Seen", r.Host)
		if r.Header.Get("X-Want") == "teapot" {
			w.WriteHeader(http.StatusTeapot)
		}
		io.WriteString(w, "healthy as "+r.Host+"\n")
	})
	mux.HandleFunc("/down", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/", http.StatusFound) })
	mux.HandleFunc("/away", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://elsewhere.example/", http.StatusFound)
	})
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/loop", http.StatusFound) })
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Write(make([]byte, 1<<20))
		io.WriteString(w, "needle")
	})
	ln := listen(t)
	srv := &http.Server{Handler: mux, TLSConfig: tlsConf, ErrorLog: quietLog()}
	go func() {
		if tlsConf != nil {
			srv.ServeTLS(ln, "", "")
		} else {
			srv.Serve(ln)
		}
	}()
	t.Cleanup(func() { srv.Close() })
	return addrOf(ln.Addr())
}

// proxyServer is an HTTP proxy: absolute-URI requests are forwarded, CONNECT opens
// a tunnel. It only ever connects to loopback.
func proxyServer(t testing.TB, tlsConf *tls.Config) netip.AddrPort {
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodConnect {
			ap, err := netip.ParseAddrPort(r.Host)
			if err != nil || !ap.Addr().IsLoopback() {
				http.Error(w, "loopback only", http.StatusForbidden)
				return
			}
			up, err := net.Dial("tcp", r.Host)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			defer up.Close()
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			brw.WriteString("HTTP/1.1 200 Connection established\r\n\r\n")
			brw.Flush()
			// When either side ends, end the other: a prober that gives up
			// before its TLS hello would otherwise leave this handler and the
			// target's handshake waiting on each other for ever.
			upDone := make(chan struct{})
			go func() {
				io.Copy(up, brw)
				up.Close()
				close(upDone)
			}()
			io.Copy(c, up)
			c.Close()
			<-upDone
			return
		}
		ap, err := netip.ParseAddrPort(r.URL.Host)
		if err != nil || !ap.Addr().IsLoopback() || !r.URL.IsAbs() {
			http.Error(w, "absolute loopback URLs only", http.StatusForbidden)
			return
		}
		out := r.Clone(r.Context())
		out.RequestURI = ""
		resp, err := tr.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	})
	ln := listen(t)
	srv := &http.Server{Handler: h, TLSConfig: tlsConf, ErrorLog: quietLog()}
	go func() {
		if tlsConf != nil {
			srv.ServeTLS(ln, "", "")
		} else {
			srv.Serve(ln)
		}
	}()
	t.Cleanup(func() { srv.Close(); tr.CloseIdleConnections() })
	return addrOf(ln.Addr())
}

// testPKI is a CA, a leaf it signed for 127.0.0.1 and kglb.test, and a self-signed
// certificate for the same names that nobody trusts.
type testPKI struct {
	caFile     string
	good, self tls.Certificate
}

func newPKI(t testing.TB) testPKI {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	now := time.Now()
	caKey := key()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kglb test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) tls.Certificate {
		k := key()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "kglb.test"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), DNSNames: []string{"kglb.test"},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			KeyUsage: x509.KeyUsageDigitalSignature}
		if parent == nil {
			parent, parentKey = tmpl, k
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &k.PublicKey, parentKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
	}
	p := testPKI{good: leaf(2, ca, caKey), self: leaf(3, nil, nil)}
	p.caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func tlsConfig(c tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{c}}
}
