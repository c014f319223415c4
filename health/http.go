package health

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"
)

const (
	defaultMaxBody = 64 << 10
	maxHeaderBytes = 64 << 10
	maxRedirects   = 5
	userAgent      = "kglb-health/1"
)

// httpChecker sends one HTTP/1.1 request per probe on a fresh connection and judges
// the status and, optionally, the body. It is a small client of its own rather than
// net/http's Transport: the connection must go to exactly this real (a Transport may
// hand a request a connection dialed for another request with the same key, and
// tunnelled probes of all reals share VIP:port), every read is bounded (a Transport
// reads headers without limit), and no goroutine outlives the probe.
type httpChecker struct {
	d        Dialer
	p        HTTPParams
	tls      bool
	tlsConf  *tls.Config // nil for plain http
	headers  [][2]string
	proxyURL *url.URL
}

func newHTTPChecker(s Spec, d Dialer) (*httpChecker, error) {
	c := &httpChecker{d: d, p: s.HTTP, tls: s.Type == HTTPS}
	var err error
	if c.headers, err = parseHeaders(s.HTTP.Headers); err != nil {
		return nil, err
	}
	if c.p.Method == "" {
		c.p.Method = http.MethodGet
	}
	if c.p.Path == "" {
		c.p.Path = "/"
	}
	if c.p.MaxBody == 0 {
		c.p.MaxBody = defaultMaxBody
	}
	if s.HTTP.ProxyURL != "" {
		u, err := url.Parse(s.HTTP.ProxyURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("proxy url %q: want an absolute http:// or https:// URL", s.HTTP.ProxyURL)
		}
		c.proxyURL = u
	}
	// The TLS config serves the real itself (https) and, in proxy mode, an https
	// URL fetched through the proxy: the same CA file and insecure flag apply.
	if c.tls || (c.proxyURL != nil && c.proxyURL.Scheme == "https") {
		conf := &tls.Config{InsecureSkipVerify: s.HTTP.Insecure, NextProtos: []string{"http/1.1"}}
		if s.HTTP.CAFile != "" {
			pem, err := os.ReadFile(s.HTTP.CAFile)
			if err != nil {
				return nil, fmt.Errorf("read ca file: %w", err)
			}
			conf.RootCAs = x509.NewCertPool()
			if !conf.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("ca file %s: no PEM certificates", s.HTTP.CAFile)
			}
		}
		c.tlsConf = conf
	}
	return c, nil
}

func (c *httpChecker) Check(ctx context.Context, t Target) Result {
	start := time.Now()
	code, err := c.probe(ctx, t)
	r := classify(ctx, start, err)
	if r.Outcome == OK {
		r.Reason = fmt.Sprintf("HTTP %d", code)
	}
	return r
}

// hostFor is the Host header of a request to dst: configured, else dst itself.
func (c *httpChecker) hostFor(dst netip.AddrPort) string {
	if c.p.Host != "" {
		return c.p.Host
	}
	return dst.String()
}

// serverName is what TLS verifies against (and sends as SNI when it is a name).
func serverName(sni, host string) string {
	if sni != "" {
		return sni
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.Trim(host, "[]")
}

func (c *httpChecker) tlsFor(name string) *tls.Config {
	conf := c.tlsConf.Clone()
	conf.ServerName = name
	return conf
}

func (c *httpChecker) probe(ctx context.Context, t Target) (int, error) {
	dst := t.Dest()
	conn, err := c.d.dial(ctx, "tcp", dst, t.Spec.Mark)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	// Every byte read from the real passes this limit: headers and body together.
	lr := &io.LimitedReader{R: conn, N: maxHeaderBytes + c.p.MaxBody}
	rw := struct {
		io.Reader
		io.Writer
	}{lr, conn}
	var stream io.ReadWriter = rw
	host := c.hostFor(dst)

	if c.proxyURL != nil {
		if c.tls { // a TLS proxy
			tc := tls.Client(readWriteConn{conn, rw}, c.tlsFor(serverName(c.p.SNI, dst.String())))
			if err := tc.HandshakeContext(ctx); err != nil {
				return 0, fmt.Errorf("tls handshake with proxy: %w", err)
			}
			stream = tc
		}
		return c.viaProxy(ctx, stream, conn, lr)
	}
	if c.tls {
		tc := tls.Client(readWriteConn{conn, rw}, c.tlsFor(serverName(c.p.SNI, host)))
		if err := tc.HandshakeContext(ctx); err != nil {
			return 0, fmt.Errorf("tls handshake: %w", err)
		}
		stream = tc
	}
	scheme := "http"
	if c.tls {
		scheme = "https"
	}
	u := &url.URL{Scheme: scheme, Host: host, Path: c.p.Path}
	return c.exchange(stream, lr, u, false)
}

// viaProxy fetches ProxyURL through the proxy on stream: an absolute-URI request for
// http URLs, CONNECT and TLS inside the tunnel for https URLs.
func (c *httpChecker) viaProxy(ctx context.Context, stream io.ReadWriter, conn net.Conn, lr *io.LimitedReader) (int, error) {
	u := c.proxyURL
	if u.Scheme == "http" {
		return c.exchange(stream, lr, u, true)
	}
	hostport := u.Host
	if u.Port() == "" {
		hostport = net.JoinHostPort(u.Hostname(), "443")
	}
	fmt.Fprintf(stream, "CONNECT %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\n\r\n", hostport, hostport, userAgent)
	br := bufio.NewReaderSize(stream, 4096)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return 0, fmt.Errorf("read CONNECT reply: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, fmt.Errorf("proxy refused CONNECT: HTTP %d", resp.StatusCode)
	}
	if br.Buffered() > 0 {
		return 0, errors.New("proxy sent data before the tunnel opened")
	}
	// The tunnel's far end is the URL's host: verify that name (SNI set the
	// proxy's own name, if the proxy speaks TLS).
	tc := tls.Client(readWriteConn{conn, stream}, c.tlsFor(serverName("", u.Hostname())))
	if err := tc.HandshakeContext(ctx); err != nil {
		return 0, fmt.Errorf("tls handshake through proxy: %w", err)
	}
	return c.exchange(tc, lr, u, false)
}

// exchange sends the request for u and judges the reply. With FollowRedirects it
// asks for a kept-alive connection and follows same-host redirects on it, against
// the same real; a redirect elsewhere fails the probe (it would test another server).
func (c *httpChecker) exchange(stream io.ReadWriter, lr *io.LimitedReader, u *url.URL, absolute bool) (int, error) {
	br := bufio.NewReaderSize(stream, 4096)
	for hop := 0; ; hop++ {
		req := &http.Request{
			Method:     c.p.Method,
			URL:        u,
			Host:       u.Host,
			Header:     http.Header{"User-Agent": {userAgent}},
			Proto:      "HTTP/1.1",
			ProtoMajor: 1, ProtoMinor: 1,
			Close: !c.p.FollowRedirects,
		}
		if !absolute && c.p.Host != "" && hop == 0 {
			req.Host = c.p.Host
		}
		for _, h := range c.headers {
			if strings.EqualFold(h[0], "Host") {
				req.Host = h[1]
				continue
			}
			req.Header.Add(h[0], h[1])
		}
		var err error
		if absolute {
			err = req.WriteProxy(stream)
		} else {
			err = req.Write(stream)
		}
		if err != nil {
			return 0, fmt.Errorf("write request: %w", err)
		}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			if lr.N <= 0 {
				return 0, errors.New("response headers too large")
			}
			return 0, fmt.Errorf("read response: %w", err)
		}
		code := resp.StatusCode
		if c.p.FollowRedirects && code >= 300 && code < 400 && resp.Header.Get("Location") != "" {
			if hop >= maxRedirects {
				return code, fmt.Errorf("more than %d redirects", maxRedirects)
			}
			next, err := u.Parse(resp.Header.Get("Location"))
			if err != nil {
				return code, fmt.Errorf("bad redirect location: %w", err)
			}
			if next.Host != u.Host || next.Scheme != u.Scheme {
				return code, fmt.Errorf("redirect to another host: %s", next.Redacted())
			}
			// Drain this reply's body (bounded) so the next reply can be read.
			if _, err := io.Copy(io.Discard, io.LimitReader(resp.Body, c.p.MaxBody)); err != nil {
				return code, fmt.Errorf("read redirect body: %w", err)
			}
			resp.Body.Close()
			if resp.Close {
				return code, fmt.Errorf("HTTP %d redirect, and the server closed the connection", code)
			}
			u = next
			continue
		}
		if !c.p.Status.Has(code) {
			return code, fmt.Errorf("HTTP %d", code)
		}
		if c.p.Body != "" {
			body, err := io.ReadAll(io.LimitReader(resp.Body, c.p.MaxBody))
			if err != nil && !bytes.Contains(body, []byte(c.p.Body)) {
				return code, fmt.Errorf("read body: %w", err)
			}
			if !bytes.Contains(body, []byte(c.p.Body)) {
				return code, fmt.Errorf("HTTP %d, body lacks %q", code, c.p.Body)
			}
		}
		// No need to read the rest: the connection is closed with RST.
		return code, nil
	}
}

// readWriteConn is a net.Conn whose reads and writes go through rw (the bounded
// reader, or a TLS stream below a second TLS layer), the rest to the socket.
type readWriteConn struct {
	net.Conn
	rw io.ReadWriter
}

func (c readWriteConn) Read(p []byte) (int, error)  { return c.rw.Read(p) }
func (c readWriteConn) Write(p []byte) (int, error) { return c.rw.Write(p) }
