package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"golang.org/x/sys/unix"
)

// ListFiles returns the *.hcl files of dir, sorted, skipping hidden files
// and editor temporaries and backups (".#x.hcl", "#x.hcl#", "x.hcl~").
// Every other *.hcl entry must be a regular file (or a symlink to one) that
// r may read (see Reader; nil: whatever the kernel lets this process
// open): a dangling symlink, a loop, a directory, a FIFO or an unreadable
// file is an error (a Diagnostics naming each), not skipped, since
// skipping it would load the configuration without its services.
func ListFiles(dir string, r *Reader) ([]string, error) {
	ls, err := listFiles(dir, r)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(ls))
	for i, f := range ls {
		out[i] = f.name
	}
	return out, nil
}

// listed is a file ListFiles returns, with what stat said of it.
type listed struct {
	name string
	stat statKey
}

// statKey is what stat says of a file that any write changes: the inode
// (a rename or a symlink swap gives another), the size, and the change
// time, which every write, chmod and rename sets and no tool can set back
// (unlike the modification time, which cp -p and tar restore).
type statKey struct {
	dev, ino uint64
	size     int64
	ctime    time.Time
}

// configName reports whether a directory entry's name is a configuration
// file's: *.hcl, but not hidden, nor an editor's temporary or backup.
func configName(name string) bool {
	return strings.HasSuffix(name, ".hcl") && !strings.HasPrefix(name, ".") && !strings.HasPrefix(name, "#")
}

// statKeyOf is the statKey of a stat result.
func statKeyOf(st *unix.Stat_t) statKey {
	return statKey{dev: st.Dev, ino: st.Ino, size: st.Size, ctime: time.Unix(st.Ctim.Unix())}
}

// statEntry stats the configuration entry name of the directory open as
// dirfd (or a path, with unix.AT_FDCWD), following symlinks as a
// ConfigMap's are, and judges it (see Reader.judge): its statKey, or why
// it cannot be read. path names the entry in messages.
func (r *Reader) statEntry(dirfd int, name, path string) (statKey, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, 0); err != nil {
		return statKey{}, statError(dirfd, name, err)
	}
	if err := r.judge(path, &st); err != nil {
		return statKey{}, err
	}
	return statKeyOf(&st), nil
}

// listFiles lists dir as ListFiles does; the error is a dirError or the
// Diagnostics of the entries that cannot be read.
func listFiles(dir string, r *Reader) ([]listed, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, dirError(dir, err)
	}
	defer d.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(d.Fd()), &st); err != nil {
		return nil, dirError(dir, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, dirError(dir, errors.New("not a directory"))
	}
	if !r.may(&st, 5) {
		return nil, Diagnostics{{File: dir, Severity: SeverityError,
			Summary: fmt.Sprintf("cannot read configuration directory: not readable and searchable by %s: mode %04o, owner %d:%d", r, st.Mode&0o7777, st.Uid, st.Gid),
			Hint:    fmt.Sprintf("give the daemon read and search permission: chmod a+rx %s, or give it to the daemon's user or group", dir)}}
	}
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, dirError(dir, err)
	}
	slices.Sort(names)
	// Stat relative to the open directory: one name to look up, not the
	// whole path, for each of what may be hundreds of files.
	dfd := int(d.Fd())
	var out []listed
	var ds Diagnostics
	for _, name := range names {
		if !configName(name) {
			continue
		}
		p := filepath.Join(dir, name)
		key, err := r.statEntry(dfd, name, p)
		if err != nil {
			ds = append(ds, fileProblem(p, err))
			continue
		}
		out = append(out, listed{name: p, stat: key})
	}
	if len(ds) > 0 {
		return nil, ds
	}
	return out, nil
}

// DirStamp summarises what stat says of the configuration files of dir,
// those ListFiles lists (name, device, inode, size, change time), or why
// they cannot be listed. Two stamps differ when a file was added, removed,
// replaced, written, or had its mode or owner changed in between; no file
// is read. A directory watch's poll compares stamps to tell whether to
// load.
func DirStamp(dir string) string {
	files, err := listFiles(dir, nil)
	if err != nil {
		return "error: " + err.Error()
	}
	var b strings.Builder
	for _, f := range files {
		fmt.Fprintf(&b, "%s:%d:%d:%d:%d;", f.name, f.stat.dev, f.stat.ino, f.stat.size, f.stat.ctime.UnixNano())
	}
	return b.String()
}

// Load reads and validates every *.hcl file of dir (see ListFiles) as one
// configuration. On failure the error is a Diagnostics with every problem
// found. Each call parses every file afresh; a Loader keeps what did not
// change between calls.
func Load(dir string) (*Config, error) { return NewLoader().Load(dir) }

// LoadFiles is Load for a list of files, read as this process may (see
// Reader). They are loaded in sorted order; a file given twice is loaded
// once.
func LoadFiles(paths ...string) (*Config, error) { return NewLoader().LoadFiles(paths...) }

// dirError is the problem of a directory that cannot be listed.
func dirError(dir string, err error) Diagnostics {
	return Diagnostics{{File: dir, Severity: SeverityError, Summary: "cannot read configuration directory: " + errText(err), Hint: "give a directory of *.hcl files, such as /etc/kglb"}}
}

// readSources reads the files in sorted order, each once. A file that
// cannot be read fails the load: a configuration is never half loaded.
func readSources(paths []string, r *Reader) ([]source, error) {
	paths = slices.Clone(paths)
	slices.Sort(paths)
	paths = slices.Compact(paths)
	srcs := make([]source, 0, len(paths))
	var ds Diagnostics
	for _, p := range paths {
		b, err := readFile(p, r)
		if err != nil {
			ds = append(ds, fileProblem(p, err))
			continue
		}
		srcs = append(srcs, source{name: p, data: b})
	}
	if len(ds) > 0 {
		return nil, ds
	}
	return srcs, nil
}

func errText(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// loadSources is the whole load of files already in memory, each parsed
// afresh.
func loadSources(srcs []source) (*Config, error) { return NewLoader().load(srcs) }

type source struct {
	name string
	data []byte // nil when a Loader kept the file's decode without reading it
	// stat is what stat said before the read, at readAt; zero for files
	// given rather than read.
	stat   statKey
	readAt time.Time
}

// fromHCL turns HCL's own diagnostics about srcs into ours, with friendlier
// text: a hint the diagnostic carries (ours, made in scan.go and ast.go), or
// else one chosen from the tokens at the error (syntaxHint).
func fromHCL(srcs []source, hd hcl.Diagnostics) []diag {
	out := make([]diag, 0, len(hd))
	tokens := map[string]hclsyntax.Tokens{}
	for _, h := range hd {
		dg := diag{sev: SeverityError, summary: lowerFirst(h.Summary), detail: h.Detail}
		if h.Severity == hcl.DiagWarning {
			dg.sev = SeverityWarning
		}
		if h.Subject != nil {
			dg.rng = *h.Subject
		}
		if hx, ok := h.Extra.(hintText); ok {
			dg.hint = string(hx)
		} else if h.Subject != nil {
			toks, ok := tokens[h.Subject.Filename]
			if !ok {
				if i := slices.IndexFunc(srcs, func(s source) bool { return s.name == h.Subject.Filename }); i >= 0 && srcs[i].data != nil {
					toks, _ = hclsyntax.LexConfig(srcs[i].data, srcs[i].name, hcl.InitialPos)
				}
				tokens[h.Subject.Filename] = toks
			}
			dg.hint = syntaxHint(toks, h)
		}
		if dg.hint == "" {
			dg.hint = hintSyntax
		}
		out = append(out, dg)
	}
	return out
}

func lowerFirst(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	if r >= 'A' && r <= 'Z' && !(len(s) > n && s[n] >= 'A' && s[n] <= 'Z') {
		return string(r+'a'-'A') + s[n:]
	}
	return s
}

// resolve sorts the diagnostics by position and attaches the source lines.
func resolve(srcs []source, ds []diag) Diagnostics {
	data := make(map[string][]byte, len(srcs))
	for _, s := range srcs {
		data[s.name] = s.data
	}
	// A file a Loader did not read this time is read for its lines now;
	// one that cannot be is cited without them.
	tried := map[string]bool{}
	for _, dg := range ds {
		if f := dg.rng.Filename; data[f] == nil && !tried[f] {
			if _, ours := data[f]; ours {
				tried[f] = true
				data[f], _ = readFile(f, nil)
			}
		}
	}
	slices.SortStableFunc(ds, func(a, b diag) int {
		return cmp.Or(cmp.Compare(a.rng.Filename, b.rng.Filename), cmp.Compare(a.rng.Start.Byte, b.rng.Start.Byte))
	})
	out := make(Diagnostics, 0, len(ds))
	for _, dg := range ds {
		o := Diagnostic{
			File: dg.rng.Filename, Line: dg.rng.Start.Line, Column: dg.rng.Start.Column,
			EndLine: dg.rng.End.Line, EndColumn: dg.rng.End.Column,
			Severity: dg.sev, Summary: dg.summary, Detail: dg.detail, Hint: dg.hint,
		}
		if src := data[o.File]; src != nil && o.Line > 0 {
			start := min(max(dg.rng.Start.Byte, 0), len(src))
			ls := bytes.LastIndexByte(src[:start], '\n') + 1
			le := bytes.IndexByte(src[start:], '\n')
			if le < 0 {
				le = len(src)
			} else {
				le += start
			}
			line := strings.TrimRight(string(src[ls:le]), "\r")
			if utf8.ValidString(line) && len(line) <= 400 {
				o.source = line
				o.caretStart = start - ls
				end := dg.rng.End.Byte
				if dg.rng.End.Line != dg.rng.Start.Line || end > ls+len(line) {
					end = ls + len(line)
				}
				o.caretEnd = end - ls
			}
		}
		out = append(out, o)
	}
	return out
}

// Format returns src in canonical layout (hclwrite). A file that does not
// parse is returned unchanged with its diagnostics as the error, since
// formatting broken syntax could lose text.
func Format(name string, src []byte) ([]byte, error) {
	diags := scanLimits(name, src)
	if !diags.HasErrors() {
		_, diags = hclsyntax.ParseConfig(src, name, hcl.InitialPos)
	}
	if diags.HasErrors() {
		return src, resolve([]source{{name: name, data: src}}, fromHCL([]source{{name: name, data: src}}, diags))
	}
	out := hclwrite.Format(src)
	// What is written must parse as what was read did: a formatter bug
	// must not become a broken file.
	if diags := scanLimits(name, out); !diags.HasErrors() {
		_, diags = hclsyntax.ParseConfig(out, name, hcl.InitialPos)
		if !diags.HasErrors() {
			return out, nil
		}
	}
	return src, fmt.Errorf("%s: formatting would not parse; leaving the file unchanged", name)
}
