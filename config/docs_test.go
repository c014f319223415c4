package config

import (
	"os"
	"strings"
	"testing"
)

// TestDocsCoverSchema fails when docs/config.md lacks a section for a block
// of the schema, or a table row for one of its attributes.
func TestDocsCoverSchema(t *testing.T) {
	b, err := os.ReadFile("../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	var walk func(*blockSpec)
	walk = func(s *blockSpec) {
		for _, c := range s.blocks {
			sec := section(doc, c.typ)
			if sec == "" {
				t.Errorf("docs/config.md has no section headed %q", c.typ)
			}
			for _, a := range c.attrs {
				if !strings.Contains(sec, "| `"+a.name+"` |") {
					t.Errorf("docs/config.md section %q has no row for attribute %q", c.typ, a.name)
				}
			}
			walk(c)
		}
	}
	walk(rootSpec)
	for _, typ := range checkTypes {
		if !strings.Contains(section(doc, "check"), "`"+typ+"`") {
			t.Errorf("docs/config.md does not describe check type %q", typ)
		}
	}
}

// section returns the text under the heading named name, up to the next
// heading.
func section(doc, name string) string {
	lines := strings.Split(doc, "\n")
	for i, l := range lines {
		level := len(l) - len(strings.TrimLeft(l, "#"))
		if level == 0 || strings.TrimSpace(l[level:]) != name {
			continue
		}
		var out []string
		for _, m := range lines[i+1:] {
			ml := len(m) - len(strings.TrimLeft(m, "#"))
			if ml > 0 && strings.HasPrefix(m[ml:], " ") {
				break
			}
			out = append(out, m)
		}
		return strings.Join(out, "\n")
	}
	return ""
}
