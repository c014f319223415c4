package health

import (
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
	"sync/atomic"
)

const (
	defaultMaxBody = 64 << 10
	maxHeaderBytes = 64 << 10
	maxRedirects   = 5
	userAgent      = "kglb-health/1"
)

// httpChecker sends one HTTP/1.1 request per probe on a fresh connection and judges
// the status and, optionally, the body. Each probe has a net/http Transport of its
// own whose every connection is dialled by the probe's Dialer to this real (the
// Transport's address is only a key: tunnelled probes of all reals share VIP:port,
// and a proxy's address is the real too), so SO_MARK, the source address and the
// fwmark tunnels apply as to every other check. Every byte read from the real
// passes one bound, and the probe closes the Transport's connections and dials in
// progress before it returns.
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
	start := probeStart(ctx)
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
	host := c.hostFor(dst)
	// Every byte read from the real passes this limit: headers and body together,
	// over every connection of the probe.
	budget := &readBudget{}
	budget.left.Store(maxHeaderBytes + c.p.MaxBody)
	dial := func(context.Context, string, string) (net.Conn, error) {
		// The probe's deadline, not the Transport's context (which outlives a
		// canceled request): the dial ends with the probe. The Transport's
		// goroutines do the reads and writes while the probe waits with its
		// CPU slot handed back (below), so the connection is not a slotted one.
		conn, stop, err := c.d.dialBounded(unslotted{ctx}, true, t)
		if err != nil {
			return nil, err
		}
		stop() // the Transport closes the connection when ctx ends
		return &boundedConn{Conn: conn, budget: budget}, nil
	}
	tr := &http.Transport{
		DialContext:            dial,
		DisableKeepAlives:      !c.p.FollowRedirects, // redirects are followed on the same connection when the real keeps it
		DisableCompression:     true,                 // the body is matched as the real sent it
		MaxResponseHeaderBytes: maxHeaderBytes,
		TLSClientConfig:        c.tlsConf, // TLS inside a proxy's CONNECT tunnel: verified against the URL's host
		OnProxyConnectResponse: func(_ context.Context, _ *url.URL, _ *http.Request, resp *http.Response) error {
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("proxy refused CONNECT: HTTP %d", resp.StatusCode)
			}
			return nil
		},
	}
	defer tr.CloseIdleConnections()
	u := &url.URL{Scheme: "http", Host: host, Path: c.p.Path}
	if c.tls {
		// TLS with the real itself (https, or a TLS proxy), under SNI's name.
		name := serverName(c.p.SNI, host)
		if c.proxyURL != nil {
			name = serverName(c.p.SNI, dst.String())
		}
		tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			tc := tls.Client(conn, c.tlsFor(name))
			if err := tc.HandshakeContext(ctx); err != nil {
				conn.Close()
				return nil, fmt.Errorf("tls handshake: %w", err)
			}
			return tc, nil
		}
		u.Scheme = "https"
	}
	if c.proxyURL != nil {
		// The real is the proxy: an absolute-URI request for http URLs,
		// CONNECT and TLS inside the tunnel for https URLs.
		proxy := &url.URL{Scheme: u.Scheme, Host: dst.String()}
		tr.Proxy = func(*http.Request) (*url.URL, error) { return proxy, nil }
		u = c.proxyURL
	}
	req, err := c.request(ctx, u)
	if err != nil {
		return 0, err
	}
	client := &http.Client{Transport: tr, CheckRedirect: c.checkRedirect}
	defer idle(ctx)()
	resp, err := client.Do(req)
	if err != nil {
		if budget.read() >= maxHeaderBytes {
			// No reply in all that: MaxResponseHeaderBytes or the budget ended it.
			return 0, errors.New("response headers too large")
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is the configured one: say what went wrong
		}
		return 0, err
	}
	defer resp.Body.Close()
	return c.judge(resp)
}

// request is the probe's request for u: the configured method, Host and headers.
func (c *httpChecker) request(ctx context.Context, u *url.URL) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, c.p.Method, u.String(), nil)
	if err != nil {
		return nil, errLocal{fmt.Errorf("http request: %w", err)}
	}
	req.Header.Set("User-Agent", userAgent)
	if c.proxyURL == nil && c.p.Host != "" {
		req.Host = c.p.Host
	}
	for _, h := range c.headers {
		if strings.EqualFold(h[0], "Host") {
			req.Host = h[1]
			continue
		}
		req.Header.Add(h[0], h[1])
	}
	return req, nil
}

// checkRedirect follows same-host redirects when FollowRedirects says so (against
// the same real: every connection is dialled to it); a redirect elsewhere fails the
// probe, since it would test another server.
func (c *httpChecker) checkRedirect(req *http.Request, via []*http.Request) error {
	if !c.p.FollowRedirects {
		return http.ErrUseLastResponse
	}
	if len(via) > maxRedirects {
		return fmt.Errorf("more than %d redirects", maxRedirects)
	}
	if first := via[0].URL; req.URL.Host != first.Host || req.URL.Scheme != first.Scheme {
		return fmt.Errorf("redirect to another host: %s", req.URL.Redacted())
	}
	return nil
}

// judge is the verdict on the final reply: its status, and its body when one is
// expected (read up to MaxBody).
func (c *httpChecker) judge(resp *http.Response) (int, error) {
	code := resp.StatusCode
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

// readBudget is how many bytes a probe may still read from the real.
type readBudget struct {
	left  atomic.Int64
	total atomic.Int64
}

func (b *readBudget) read() int64 { return b.total.Load() }

// boundedConn is a probe's connection whose reads all pass its budget.
type boundedConn struct {
	net.Conn
	budget *readBudget
}

func (c *boundedConn) Read(p []byte) (int, error) {
	left := c.budget.left.Load()
	if left <= 0 {
		return 0, errors.New("read more than the probe's bound")
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := c.Conn.Read(p)
	c.budget.left.Add(-int64(n))
	c.budget.total.Add(int64(n))
	return n, err
}

// unslotted is a probe's context for the dial of a connection that the
// Transport's goroutines use: its deadline and values, without the CPU slot
// (see idle).
type unslotted struct{ context.Context }
