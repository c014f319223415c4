package health

import "testing"

func TestEngineProcs(t *testing.T) {
	for _, c := range []struct {
		name            string
		env             string
		procs, cpus     int
		want, wantSlots int
	}{
		// The probes take every CPU, the engine has the P beyond them.
		{"one CPU", "", 1, 1, 2, 1},
		{"two CPUs", "", 2, 2, 3, 2},
		{"64 CPUs", "", 64, 64, 65, 64},
		// A CPU quota bounds Go's default: the probes keep to one P fewer
		// than the quota, so that they never throttle the engine.
		{"quota of two of 64", "", 2, 64, 2, 1},
		// The operator's GOMAXPROCS is taken as it is.
		{"GOMAXPROCS=4", "4", 4, 2, 4, 3},
		{"GOMAXPROCS=1", "1", 1, 8, 1, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := EngineProcs(c.env, c.procs, c.cpus)
			if got != c.want {
				t.Fatalf("EngineProcs(%q, %d, %d) = %d, want %d", c.env, c.procs, c.cpus, got, c.want)
			}
			if slots := slotsOf(got); slots != c.wantSlots {
				t.Errorf("probe slots at GOMAXPROCS %d: %d, want %d", got, slots, c.wantSlots)
			}
		})
	}
}
