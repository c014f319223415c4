// Package health owns kglb's view of the reals: the probes (tcp, http, https, dns,
// syslog), the scheduler that runs them at scale, the rise/fall hysteresis that turns
// probe results into up/down verdicts, the per-real fwmark allocator for tunnelled
// checks, and the metrics about all of it.
//
// Data flows one way. The engine builds a Target per (real, check) of every service
// (a Target is a real's address:port plus a Spec, both plain comparable values) and
// hands the Scheduler the full set on every config change:
//
//	s, err := health.New(health.Options{Logger: log.Named("health"), Registerer: reg,
//		Dialer: health.Dialer{Source4: lbAddr}})
//	go s.Run(ctx)
//	err = s.Update(targets)          // the full set, duplicates allowed
//	for cs := range s.Changes() { ... } // a batch; each c.Key is the Target, c.State up or down
//	st, ok := s.Lookup(target)        // current verdict, e.g. right after Update
//	all := s.Snapshot()               // for /status
//
// The Target is the state key. Several services sharing a real and a check produce
// the same Target and so share one probe (Status.Refs counts them). A reload that
// keeps a Target keeps its counters, verdict and probe phase; a reload that only
// changes the timing of a check (interval, timeout, rise, fall) gives a new Target
// that inherits the old verdict and counters (Lookup shows it; no Change is sent).
// New Targets start Unknown and are spread into the schedule. Only changes of verdict
// are sent on Changes, in order.
//
// Tunnelled checks: with Spec.Tunnel the probe is sent to Spec.VIP:port from a socket
// marked with Spec.Mark (SO_MARK) and bound to Dialer.Source4/Source6, a non-VIP
// local address of the LB. The engine takes the marks from Marks.Sync (one per real
// address, stable across reloads) and gives the ipvs package one fwmark service per
// mark with that one real at port 0 and the service's forwarding method, so IPVS's
// LOCAL_OUT hook carries the probe to exactly that real along the path client
// traffic takes. A real that answers on its own address but does not serve the VIP
// is then reported down. The LB needs accept_local=1 (all and the interface facing
// the reals), because the real's reply comes from the VIP, which is local there too.
package health
