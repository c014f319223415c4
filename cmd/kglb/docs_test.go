package main

import (
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const (
	manPage    = "../../packaging/deb/kglb.8"
	completion = "../../packaging/deb/kglb.bash-completion"
)

// flagsOf lists the flags a command prints for -h.
func flagsOf(t *testing.T, cmd string) []string {
	t.Helper()
	_, _, stderr := runCmd(cmd, "-h")
	var out []string
	for _, m := range regexp.MustCompile(`(?m)^\s+-([a-z-]+)`).FindAllStringSubmatch(stderr, -1) {
		out = append(out, m[1])
	}
	return out
}

// TestManPageAndCompletionCoverCommands keeps the man page and the bash
// completion in step with the commands table and every command's flags.
func TestManPageAndCompletionCoverCommands(t *testing.T) {
	man, err := os.ReadFile(manPage)
	if err != nil {
		t.Fatal(err)
	}
	comp, err := os.ReadFile(completion)
	if err != nil {
		t.Fatal(err)
	}
	// groff spells "-" as "\-".
	manText := strings.ReplaceAll(string(man), `\-`, "-")

	m := regexp.MustCompile(`local commands="([^"]*)"`).FindStringSubmatch(string(comp))
	if m == nil {
		t.Fatal("no commands list in the completion")
	}
	listed := strings.Fields(m[1])
	slices.Sort(listed)
	var want []string
	for name := range commands {
		want = append(want, name)
	}
	want = append(want, "help")
	slices.Sort(want)
	if !slices.Equal(listed, want) {
		t.Errorf("completion lists %v, the binary has %v", listed, want)
	}

	for name := range commands {
		if !strings.Contains(manText, ".B kglb "+name+"\n") || !strings.Contains(manText, ".B "+name+"\n") {
			t.Errorf("the man page has no synopsis or COMMANDS entry for %q", name)
		}
		flags := flagsOf(t, name)
		if name != "version" && len(flags) == 0 {
			t.Errorf("kglb %s -h listed no flags; is the parse of its usage broken?", name)
		}
		for _, f := range flags {
			if !strings.Contains(manText, "-"+f) {
				t.Errorf("the man page does not mention kglb %s -%s", name, f)
			}
			if !strings.Contains(string(comp), "-"+f) {
				t.Errorf("the completion does not offer kglb %s -%s", name, f)
			}
		}
	}
}

// TestCompletionIsValidBash parses the completion script with bash -n.
func TestCompletionIsValidBash(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal("no bash: the Makefile needs it too")
	}
	if out, err := exec.Command(bash, "-n", completion).CombinedOutput(); err != nil {
		t.Errorf("bash -n %s: %v\n%s", completion, err, out)
	}
}
