package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSecretModeProblem(t *testing.T) {
	const kglbGID = 998
	tests := []struct {
		name     string
		mode     fs.FileMode
		gid      int
		wantHint string // "" when the file is fine
	}{
		{"owner only", 0o600, 1000, ""},
		{"group kglb", 0o640, kglbGID, ""},
		{"group root", 0o640, 0, ""},
		{"world readable", 0o644, kglbGID, "chmod 0640"},
		{"world readable only", 0o604, 0, "chmod 0640"},
		{"group of someone else", 0o640, 1000, "chgrp kglb"},
		{"someone else's group, not readable", 0o600, 1000, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			problem, hint := secretModeProblem("/etc/kglb/tor-a.secret", tt.mode, tt.gid, kglbGID)
			if (problem == "") != (tt.wantHint == "") || !strings.Contains(hint, tt.wantHint) {
				t.Errorf("secretModeProblem(%04o, gid %d) = %q, %q; want a hint with %q", tt.mode, tt.gid, problem, hint, tt.wantHint)
			}
		})
	}
}

// A world-readable password file is refused at its attribute's position;
// the password itself never appears in the message.
func TestPasswordFileWorldReadable(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "tor-a.secret")
	if err := os.WriteFile(secret, []byte("hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(secret, 0o644); err != nil { // past the umask
		t.Fatal(err)
	}
	write(t, dir, "bgp.hcl", `bgp {
  asn       = 65010
  router_id = "192.0.2.10"
  neighbor "tor-a" {
    address       = "192.0.2.1"
    asn           = 65000
    password_file = "`+secret+`"
  }
}
`)
	_, err := Load(dir)
	var ds Diagnostics
	if !errors.As(err, &ds) || len(ds) != 1 {
		t.Fatalf("Load = %v", err)
	}
	d := ds[0]
	if d.Line != 7 || d.Column != 21 || !strings.Contains(d.Summary, "readable by every user") || !strings.Contains(d.Hint, "chmod 0640 "+secret) {
		t.Errorf("diagnostic = %+v", d)
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("the password leaked into the error: %v", err)
	}
	if err := os.Chmod(secret, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err != nil {
		t.Errorf("a 0640 root-group file is refused: %v", err)
	}
}
