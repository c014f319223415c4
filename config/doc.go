// Package config owns kglb's configuration language: the HCL schema of
// /etc/kglb/*.hcl (daemon, bgp with neighbors, services with reals, checks,
// persistence and announce policy), its defaults, and every validation,
// within one file and across files.
//
// Load (a directory) and LoadFiles (a list of files) are the one load path:
// the daemon at start, every reload and `kglb validate` call them (the
// daemon through a Loader, which is Load with each file's decode kept while
// the file's content stays the same). They return a plain Config value
// (net/netip addresses, uint16 ports, time.Duration, string enums; no HCL
// types and no pointers into parsed files), or a Diagnostics error holding
// every problem found, each with its file:line:col, the source line and a
// hint saying what to write instead. Nothing outside this package imports
// HCL: Diagnostics renders itself as text or JSON, and Format gives `kglb
// fmt` its canonical layout.
//
// Before either parser sees a file, scanLimits bounds its size, line
// length, string length and nesting depth, so that no input can overflow
// a parser's stack. Every *.hcl entry is read or refused: a Reader's
// credentials (mode bits, never root's override) decide what is readable,
// the same for the daemon and `kglb validate`.
//
// Loading is fast enough for 10,000 services (a cold `kglb validate` under
// 2 s, config's BenchmarkLoad10000): files in the plain subset of HCL that
// configurations use are parsed by a small dedicated parser into the same
// tree hclsyntax would give (checked by FuzzLoad); anything else, and every
// syntax error, goes through hclsyntax itself. hclsyntax alone takes ten
// times as long. A reload through a Loader parses and decodes only the
// files that changed, each whole; the checks across files run over the
// whole set.
package config
