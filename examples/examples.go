// Package examples holds the example configurations shipped with kglb, so
// tests can load them wherever they run (the VM tests have no checkout).
package examples

import "embed"

// FS holds every examples/*.hcl file.
//
//go:embed *.hcl
var FS embed.FS
