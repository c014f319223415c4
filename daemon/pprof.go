package daemon

import (
	"net/http"
	"net/http/pprof"
	"os"
)

// pprofEnv turns on Go's profiler on the stats address when set to 1: the
// end-to-end benchmark (scripts/e2ebench.sh) profiles the installed daemon
// with it. Off by default: a profile costs CPU and shows internals, and the
// stats address may be reachable by more than the operator.
const pprofEnv = "KGLB_PPROF"

// mountPprof adds /debug/pprof/ to mux when KGLB_PPROF=1.
func mountPprof(mux *http.ServeMux) {
	if os.Getenv(pprofEnv) != "1" {
		return
	}
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}
