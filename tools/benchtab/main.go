// Command benchtab reads `go test -bench` output (from the host and from the
// VM harness, concatenated) on stdin and prints one table of every benchmark,
// with each metric it reported and, where the project has set one, the
// target it is held to.
//
// Benchmarks report the figures an issue asks for with b.ReportMetric, so a
// benchmark line is a row: its name, then "value unit" pairs. Targets live in
// targets.txt beside this file, one "Benchmark/sub unit op value" a line.
package main

import (
	"bufio"
	_ "embed"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

//go:embed targets.txt
var targetsText string

func main() {
	strict := flag.Bool("strict", false, "exit 1 when no benchmark line was read")
	flag.Parse()
	rows, err := parse(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtab:", err)
		os.Exit(1)
	}
	targets, err := parseTargets(targetsText)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtab: targets.txt:", err)
		os.Exit(1)
	}
	write(os.Stdout, rows, targets)
	if *strict && len(rows) == 0 {
		os.Exit(1)
	}
}

// Metric is one "value unit" pair of a benchmark line.
type Metric struct {
	Value float64
	Unit  string
}

// Row is one benchmark result line.
type Row struct {
	Pkg     string // short package path, e.g. "config"
	Name    string // benchmark name without the -GOMAXPROCS suffix
	Iters   int64
	Metrics []Metric
}

const modulePrefix = "github.com/kglb/kglb/"

func parse(r io.Reader) ([]Row, error) {
	var rows []Row
	pkg := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimPrefix(strings.TrimSpace(p), modulePrefix)
			continue
		}
		if row, ok := parseLine(line); ok {
			row.Pkg = pkg
			rows = append(rows, row)
		}
	}
	return rows, sc.Err()
}

// parseLine reads "BenchmarkX-2  100  123 ns/op  1.00 ratio ...".
func parseLine(line string) (Row, bool) {
	f := strings.Fields(line)
	if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") || len(f)%2 != 0 {
		return Row{}, false
	}
	var row Row
	row.Name = trimProcs(f[0])
	if _, err := fmt.Sscan(f[1], &row.Iters); err != nil {
		return Row{}, false
	}
	for i := 2; i+1 < len(f); i += 2 {
		var v float64
		if _, err := fmt.Sscan(f[i], &v); err != nil {
			return Row{}, false
		}
		row.Metrics = append(row.Metrics, Metric{Value: v, Unit: f[i+1]})
	}
	return row, true
}

// trimProcs drops the "-N" GOMAXPROCS suffix go test appends.
func trimProcs(name string) string {
	i := strings.LastIndexByte(name, '-')
	if i < 0 {
		return name
	}
	for _, c := range name[i+1:] {
		if c < '0' || c > '9' {
			return name
		}
	}
	return name[:i]
}

// Target is a bound one metric of one benchmark is held to.
type Target struct {
	Name, Unit, Op string
	Value          float64
}

func (t Target) holds(v float64) bool {
	switch t.Op {
	case "<=":
		return v <= t.Value
	case ">=":
		return v >= t.Value
	case "<":
		return v < t.Value
	case ">":
		return v > t.Value
	case "==":
		return v == t.Value
	}
	return false
}

func parseTargets(text string) (map[[2]string]Target, error) {
	out := map[[2]string]Target{}
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 4 {
			return nil, fmt.Errorf("line %d: want \"Benchmark unit op value\", got %q", n+1, line)
		}
		t := Target{Name: f[0], Unit: f[1], Op: f[2]}
		if _, err := fmt.Sscan(f[3], &t.Value); err != nil {
			return nil, fmt.Errorf("line %d: value %q: %w", n+1, f[3], err)
		}
		switch t.Op {
		case "<", "<=", ">", ">=", "==":
		default:
			return nil, fmt.Errorf("line %d: unknown operator %q", n+1, t.Op)
		}
		out[[2]string{t.Name, t.Unit}] = t
	}
	return out, nil
}

func write(w io.Writer, rows []Row, targets map[[2]string]Target) {
	fmt.Fprintf(w, "%-12s %-48s %14s  %-14s %s\n", "PACKAGE", "BENCHMARK", "VALUE", "UNIT", "TARGET")
	for _, r := range rows {
		for i, m := range r.Metrics {
			pkg, name := r.Pkg, r.Name
			if i > 0 {
				pkg, name = "", ""
			}
			target := ""
			if t, ok := targets[[2]string{r.Name, m.Unit}]; ok {
				verdict := "met"
				if !t.holds(m.Value) {
					verdict = "MISSED"
				}
				target = fmt.Sprintf("%s %g (%s)", t.Op, t.Value, verdict)
			}
			fmt.Fprintf(w, "%-12s %-48s %14s  %-14s %s\n", pkg, name, format(m.Value), m.Unit, target)
		}
	}
}

func format(v float64) string {
	switch {
	case v == float64(int64(v)) && v < 1e15 && v > -1e15:
		return fmt.Sprintf("%d", int64(v))
	case v >= 100 || v <= -100:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}
