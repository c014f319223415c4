package main

import "github.com/aymanbagabas/go-udiff"

// unifiedDiff returns a unified diff (3 lines of context) from a to b, both
// labelled name, as patch(1) applies it, or nothing when they are equal.
// go-udiff is gopls's diff (Myers' algorithm, "\ No newline at end of
// file" marks) published as a module.
func unifiedDiff(name string, a, b []byte) []byte {
	return []byte(udiff.Unified(name, name, string(a), string(b)))
}
