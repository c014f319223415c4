// Command e2ereal is the real server of the end-to-end benchmark
// (scripts/e2ebench.sh): it accepts TCP connections on one address and
// closes them at once, as a health-checked real does for a TCP check, and
// every 200ms writes how many it has accepted to a file, so the benchmark
// counts the checks a daemon made from the reals' side, the same way for
// kglb and keepalived. It runs in a network namespace of the benchmark VM.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "0.0.0.0:80", "address to accept on")
	countFile := flag.String("count", "/run/e2ereal.count", "file that holds the number of connections accepted")
	workers := flag.Int("workers", 4, "accept loops")
	flag.Parse()

	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", *listen)
	if err != nil {
		log.Fatalf("listen on %s: %v", *listen, err)
	}
	var accepted atomic.Uint64
	for range *workers {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					log.Printf("accept on %s: %v", *listen, err)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				accepted.Add(1)
				c.Close()
			}
		}()
	}
	tmp := *countFile + ".tmp"
	for range time.Tick(200 * time.Millisecond) {
		if err := os.WriteFile(tmp, []byte(fmt.Sprintf("%d\n", accepted.Load())), 0o644); err != nil {
			log.Fatalf("write %s: %v", tmp, err)
		}
		if err := os.Rename(tmp, *countFile); err != nil {
			log.Fatalf("rename %s: %v", tmp, err)
		}
	}
}
