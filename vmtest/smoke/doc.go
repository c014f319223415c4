// Package smoke proves that the test VM built by vmtest/run.sh has what
// kglb's kernel tests need: IPVS with the mh scheduler (through
// github.com/moby/ipvs), dummy links, the ipip fallback device tunl0, and
// namespaces joined by veth carrying TCP, also through an IPVS NAT service.
// Its tests carry the vmtest build tag; run them with
// `vmtest/run.sh test vmtest/smoke`.
package smoke
