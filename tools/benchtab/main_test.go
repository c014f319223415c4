package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	in := `goos: linux
pkg: github.com/kglb/kglb/config
BenchmarkLoad100-2   	     100	   1234567 ns/op	  20000 B/op	     300 allocs/op
BenchmarkLoad10000-2 	       3	 400000000 ns/op
PASS
pkg: github.com/kglb/kglb/ipvs
BenchmarkColdApply/10k-2   1   5 s/op   1.10 ratio
--- FAIL: BenchmarkBroken
BenchmarkOdd 1 2
`
	rows, err := parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 {
		t.Fatalf("got %d rows, want 3: %+v", len(rows), rows)
	}
	if rows[0].Pkg != "config" || rows[0].Name != "BenchmarkLoad100" || len(rows[0].Metrics) != 3 {
		t.Errorf("row 0 = %+v", rows[0])
	}
	if rows[2].Pkg != "ipvs" || rows[2].Name != "BenchmarkColdApply/10k" || rows[2].Metrics[1] != (Metric{1.10, "ratio"}) {
		t.Errorf("row 2 = %+v", rows[2])
	}

	targets, err := parseTargets("BenchmarkLoad10000 ns/op < 300000000\nBenchmarkColdApply/10k ratio <= 1.2\n")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	write(&out, rows, targets)
	for _, want := range []string{"< 3e+08 (MISSED)", "<= 1.2 (met)", "1.100", "1234567"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

func TestParseTargetsRejectsBadLines(t *testing.T) {
	for _, in := range []string{"BenchmarkX ratio", "BenchmarkX ratio ~ 1", "BenchmarkX ratio <= x"} {
		if _, err := parseTargets(in); err == nil {
			t.Errorf("parseTargets(%q) = nil error", in)
		}
	}
}

func TestTrimProcs(t *testing.T) {
	for in, want := range map[string]string{"BenchmarkA-2": "BenchmarkA", "BenchmarkA/sub-x": "BenchmarkA/sub-x", "BenchmarkA": "BenchmarkA"} {
		if got := trimProcs(in); got != want {
			t.Errorf("trimProcs(%q) = %q, want %q", in, got, want)
		}
	}
}
