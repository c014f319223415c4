package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Severity of a diagnostic.
type Severity string

// Severities.
const (
	SeverityError   Severity = "error"
	SeverityWarning Severity = "warning"
)

// Diagnostic is one problem found in the configuration, with its position.
// It carries the source line it points at, so it can be rendered without
// the files.
type Diagnostic struct {
	File      string   `json:"file"`
	Line      int      `json:"line"`   // 1-based; 0 when the problem has no position
	Column    int      `json:"column"` // 1-based, in characters
	EndLine   int      `json:"end_line"`
	EndColumn int      `json:"end_column"`
	Severity  Severity `json:"severity"`
	Summary   string   `json:"summary"` // one line, says what is wrong
	Detail    string   `json:"detail"`  // more context, may be empty
	Hint      string   `json:"hint"`    // what to write instead

	// source is the line at Line; caret* are byte offsets in it to underline.
	source     string
	caretStart int
	caretEnd   int
}

// Position is "file:line:col" (or just "file" without a position).
func (d Diagnostic) Position() string {
	if d.Line == 0 {
		return d.File
	}
	return fmt.Sprintf("%s:%d:%d", d.File, d.Line, d.Column)
}

// String is the one-line form, "file:line:col: summary" (with "warning: "
// before the summary of a warning), as logs and status pages print it.
func (d Diagnostic) String() string {
	if d.Severity == SeverityWarning {
		return d.Position() + ": warning: " + d.Summary
	}
	return d.Position() + ": " + d.Summary
}

// Error is String: a Diagnostic is an error too.
func (d Diagnostic) Error() string { return d.String() }

// Diagnostics is every problem of one load. Load returns it as its error;
// use errors.As to get it back.
type Diagnostics []Diagnostic

// Error is one line per problem, each as Diagnostic.String prints it:
// "file:line:col: summary".
func (ds Diagnostics) Error() string {
	var b strings.Builder
	for i, d := range ds {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(d.String())
	}
	return b.String()
}

// String is Error: so that %v and loggers print the lines, not the structs.
func (ds Diagnostics) String() string { return ds.Error() }

// Lines is one "file:line:col: summary" string per problem, for a log
// field or a status page that lists them.
func (ds Diagnostics) Lines() []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.String()
	}
	return out
}

// HasErrors reports whether any diagnostic is an error.
func (ds Diagnostics) HasErrors() bool {
	for _, d := range ds {
		if d.Severity != SeverityWarning {
			return true
		}
	}
	return false
}

// Errors counts the diagnostics of error severity.
func (ds Diagnostics) Errors() int {
	n := 0
	for _, d := range ds {
		if d.Severity != SeverityWarning {
			n++
		}
	}
	return n
}

// WriteText writes the rich form of every diagnostic: the position and
// summary, the detail, the source line with the offending part underlined,
// and a hint saying what to write instead. Diagnostics are separated by a
// blank line.
func (ds Diagnostics) WriteText(w io.Writer) error {
	var b bytes.Buffer
	for i, d := range ds {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%s: %s: %s\n", d.Position(), d.Severity, d.Summary)
		if d.Detail != "" {
			for _, l := range strings.Split(d.Detail, "\n") {
				fmt.Fprintf(&b, "  %s\n", l)
			}
		}
		if d.Line > 0 && d.source != "" {
			num := fmt.Sprint(d.Line)
			pad := strings.Repeat(" ", len(num))
			fmt.Fprintf(&b, "  %s | %s\n", num, d.source)
			fmt.Fprintf(&b, "  %s | %s\n", pad, underline(d.source, d.caretStart, d.caretEnd))
		}
		if d.Hint != "" {
			fmt.Fprintf(&b, "  hint: %s\n", d.Hint)
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// underline returns spaces up to byte start of line (tabs kept, so the
// carets line up) and carets up to byte end (at least one).
func underline(line string, start, end int) string {
	start = min(max(start, 0), len(line))
	end = min(max(end, start), len(line))
	var b strings.Builder
	for _, r := range line[:start] {
		if r == '\t' {
			b.WriteByte('\t')
		} else {
			b.WriteByte(' ')
		}
	}
	n := utf8.RuneCountInString(line[start:end])
	b.WriteString(strings.Repeat("^", max(n, 1)))
	return b.String()
}

// WriteJSON writes the diagnostics as a JSON array of objects with the keys
// file, line, column, end_line, end_column, severity, summary, detail, hint.
func (ds Diagnostics) WriteJSON(w io.Writer) error {
	if ds == nil {
		ds = Diagnostics{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(ds)
}
