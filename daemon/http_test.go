package daemon

import (
	"context"
	"net"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// The stats server frees its address once its context ends and closed is
// closed: a daemon restarted in the same process (or a test) binds again.
func TestServeHTTPFreesAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	d := &daemon{reg: prometheus.NewRegistry()}
	ctx, cancel := context.WithCancel(context.Background())
	errs, closed := d.serveHTTP(ctx, addr)
	if c, err := net.Dial("tcp", addr); err != nil {
		t.Fatalf("stats server not listening: %v", err)
	} else {
		c.Close()
	}
	cancel()
	<-closed
	select {
	case err := <-errs:
		t.Errorf("server reported %v on a clean shutdown", err)
	default:
	}
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("address still held after shutdown: %v", err)
	}
	ln.Close()

	// A second server on a taken address reports it and is closed at once.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	errs, closed = d.serveHTTP(context.Background(), busy.Addr().String())
	<-closed
	if err := <-errs; err == nil {
		t.Error("no error for a taken address")
	}
}
