package config

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"golang.org/x/sys/unix"
)

// Loader is Load for a directory that is loaded again and again, as the
// daemon's reloads do. It keeps each file's decode while the file stays the
// same:
//
//   - Reading. A file whose inode, size and change time are as they were is
//     not read again, unless it changed so close to the time it was read
//     that a second write within the same clock tick could hide behind an
//     unchanged ctime (see racyWindow). LoadChanged, given the entries a
//     directory watch named, does not even stat the others.
//   - Decoding. A file read again whose content is what it was keeps its
//     decode; one that changed is parsed and decoded whole. The services of
//     an unchanged file are the same *Service as before.
//   - Checking. The checks across services and files run on every load, so
//     a Loader returns exactly what Load returns for the same files.
//
// The cache holds the files of the last Load that could read its files,
// their content included (Config.Contents); a deleted file is forgotten.
//
// Configs from one Loader share, with each other and with the cache, the
// services and the content of unchanged files and the slices and maps
// inside the bgp block (Neighbors, communities): treat a loaded Config as
// read-only. The Services slice is new on each Load, so sorting or
// replacing whole elements is safe.
//
// A Loader may be shared between goroutines; its Loads run one at a time.
type Loader struct {
	// Reader is whose credentials the files must be readable with (see
	// Reader); NewLoader sets this process's. Set it before the first
	// Load.
	Reader Reader

	mu    sync.Mutex
	files map[string]*fileDecode // by path
	// dir and listing are the directory of the last Load and its files, as
	// LoadChanged keeps them up to date.
	dir     string
	listing []listed

	// decoded counts the files the last Load parsed and decoded, rather
	// than took from the cache, and read the files it read; tests read
	// them.
	decoded, read int
	// now is the clock a read is stamped with; tests move it on.
	now func() time.Time
}

// racyWindow is how long after its last change a file is read again on
// every Load even when stat says nothing changed. Linux stamps ctime from
// a clock that ticks every few milliseconds, and some file systems keep
// whole seconds: a write in the same tick as the change before it leaves
// the same ctime (and perhaps the same size), so only a file that was read
// well after its last change can be trusted by its stat.
const racyWindow = 2 * time.Second

// NewLoader returns a Loader with an empty cache: its first Load reads and
// decodes every file, as Load does.
func NewLoader() *Loader { return &Loader{now: time.Now, Reader: ProcessReader()} }

// LoadFiles is Load for a list of files, read as l.Reader may. They are
// loaded in sorted order; a file given twice is loaded once. The files are
// read afresh.
func (l *Loader) LoadFiles(paths ...string) (*Config, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	srcs, err := readSources(paths, &l.Reader)
	if err != nil {
		return nil, err
	}
	return l.load(srcs)
}

// Load reads and validates every *.hcl file of dir (see ListFiles) as one
// configuration, reading only the files whose stat changed (or that changed
// too recently to trust it) and decoding only those whose content changed
// since the last Load. On failure the error is a Diagnostics with every
// problem found.
func (l *Loader) Load(dir string) (*Config, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.loadDir(dir)
}

func (l *Loader) loadDir(dir string) (*Config, error) {
	files, err := listFiles(dir, &l.Reader)
	if err != nil {
		l.dir, l.listing = "", nil
		return nil, err
	}
	l.dir, l.listing = dir, files
	return l.readAndLoad(files, nil)
}

// LoadChanged is Load for a caller that knows which entries of dir may have
// changed since the last Load or LoadChanged of dir: the paths a directory
// watch reported. Only those are looked at; every other file is taken as it
// was, unless its last read was too close to its last change to trust (see
// racyWindow), in which case it is looked at too. A changed entry that is
// neither a configuration file nor a plain file (a directory, a symlink
// such as a ConfigMap's ..data swapped under the files) makes it a full
// Load, as does a first call or another dir. A watch that may have lost
// events must call Load.
func (l *Loader) LoadChanged(dir string, changed []string) (*Config, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.listing == nil || l.dir != dir {
		return l.loadDir(dir)
	}
	files := l.listing // updated in place: a failure below lists the directory again
	fresh := make(map[string]bool, len(changed))
	for _, p := range changed {
		name := filepath.Base(p)
		if filepath.Clean(filepath.Dir(p)) != filepath.Clean(dir) {
			return l.loadDir(dir)
		}
		p = filepath.Join(dir, name)
		if !configName(name) {
			if lst, err := os.Lstat(p); err == nil && !lst.Mode().IsRegular() {
				return l.loadDir(dir) // perhaps what the files point through
			}
			continue // an editor's temporary or backup
		}
		key, err := l.Reader.statEntry(unix.AT_FDCWD, p, p)
		i, known := slices.BinarySearchFunc(files, p, func(f listed, p string) int { return strings.Compare(f.name, p) })
		if err != nil {
			var lst unix.Stat_t
			if unix.Lstat(p, &lst) == nil {
				return l.loadDir(dir) // there, but not readable: reported
			}
			if known {
				files = slices.Delete(files, i, i+1)
			}
			continue
		}
		f := listed{name: p, stat: key}
		if known {
			files[i] = f
		} else {
			files = slices.Insert(files, i, f)
		}
		fresh[p] = true
	}
	l.listing = files
	return l.readAndLoad(files, fresh)
}

// readAndLoad reads the files that may have changed, and loads. With fresh
// nil, every file was just stat'ed (Load); otherwise only those in fresh
// were, and the others are stat'ed now only when their last read was racy.
func (l *Loader) readAndLoad(files []listed, fresh map[string]bool) (*Config, error) {
	srcs := make([]source, len(files))
	var toRead []int
	for i, f := range files {
		fd := l.files[f.name]
		if fresh != nil && !fresh[f.name] && fd != nil && !fd.readAt.IsZero() {
			if fd.readAt.Sub(fd.stat.ctime) > racyWindow {
				srcs[i] = source{name: f.name, stat: fd.stat}
				continue // no event, and settled when last read
			}
			if key, err := l.Reader.statEntry(unix.AT_FDCWD, f.name, f.name); err == nil {
				f.stat = key
			} // else readFile below says why
		}
		srcs[i] = source{name: f.name, stat: f.stat}
		if fd != nil && fd.trusted(f.stat) {
			continue
		}
		srcs[i].readAt = l.now()
		toRead = append(toRead, i)
	}
	// A cold load reads every file: several reads in flight at once
	// overlap their waits on the disk (and their syscalls on the CPUs).
	errs := make([]error, len(srcs))
	each(len(toRead), min(readWorkers, len(toRead)/parallelMin), func(k int) {
		i := toRead[k]
		srcs[i].data, errs[i] = readFile(srcs[i].name, &l.Reader)
	})
	var ds Diagnostics
	for _, i := range toRead {
		if errs[i] != nil {
			ds = append(ds, fileProblem(srcs[i].name, errs[i]))
		}
	}
	l.read = len(toRead) - len(ds)
	if len(ds) > 0 {
		// The files read are not cached (load is not reached), yet the
		// listing has their new stat: a LoadChanged that trusted it would
		// keep their old decode. The next load lists the directory again.
		l.dir, l.listing = "", nil
		return nil, ds
	}
	return l.load(srcs)
}

// readWorkers bounds the files a load reads at once.
const readWorkers = 8

// fileDecode is what one file contributes to a load, everything that does
// not depend on the other files. It is kept while the file's content stays
// the same, and read, never written, by each load that uses it.
type fileDecode struct {
	// data is the content, kept for Config.Contents: a file the next load
	// trusts by its stat is not read again, yet its config must hand the
	// bytes it was made from to whoever records it.
	data []byte
	// sum is the SHA-256 of data.
	sum [32]byte
	// stat is what stat said of the file when it was last read, at readAt;
	// zero readAt for a file that was given, not read.
	stat   statKey
	readAt time.Time
	// parse holds the syntax problems; when it has errors, nothing below
	// is set: a half-parsed file is not decoded.
	parse hcl.Diagnostics
	// The problems below are kept in the order one pass over the file
	// reports them, so that diagnostics at the same position come out in
	// the same order whatever was cached: top level, daemon, bgp, services.
	top      []diag
	daemons  []topBlock
	bgps     []topBlock
	services []*Service
	metas    []*serviceMeta
	svcDiags []diag
}

// clone is a copy of fd that shares its decoded values, to record a new
// stat for the same content without writing to what earlier loads hold.
func (fd *fileDecode) clone() *fileDecode {
	c := *fd
	return &c
}

// trusted reports whether the file, as stat now sees it, still has the
// content fd was decoded from without reading it again.
func (fd *fileDecode) trusted(now statKey) bool {
	return !fd.readAt.IsZero() && fd.stat == now && now.ino != 0 && fd.readAt.Sub(now.ctime) > racyWindow
}

// topBlock is a daemon or bgp block decoded on its own. Only the first in
// the whole set is used; a later one is an error, and its own problems are
// not reported: they would be noise beside "more than one".
type topBlock struct {
	at    hcl.Range // the block type, which the "more than one" error cites
	def   hcl.Range // from the type to the opening brace
	diags []diag
	// daemon, and the values of the daemon attributes that the checks
	// across files cite (zero when not written).
	daemon          Daemon
	healthSource    hcl.Range
	tunnelMarkCount hcl.Range
	bgp             BGP
}

// decodeFile parses and decodes one file on its own: by fastParse, or by
// hclsyntax when fastParse declines the file. The tree is dropped when it
// returns, so only one file's tree is alive at a time: less for the GC to
// trace.
func decodeFile(name string, data []byte) *fileDecode {
	fd := &fileDecode{data: data, sum: sha256.Sum256(data)}
	if fd.parse = scanLimits(name, data); fd.parse.HasErrors() {
		return fd
	}
	b := fastParse(data)
	if b == nil {
		if b, fd.parse = parse(name, data); b == nil {
			return fd
		}
	}
	d := &decoder{file: name}
	f := d.open(b, rootSpec, "")
	fd.top = d.since(0)
	for _, bl := range f.blocksOf("daemon") {
		n := len(d.diags)
		tb := topBlock{at: d.full(bl.typeRange), def: d.full(bl.defRange)}
		var df *fields
		tb.daemon, df = d.decodeDaemon(bl)
		if a := df.attr("health_source"); a != nil {
			tb.healthSource = d.full(a.val.rng)
		}
		if a := df.attr("tunnel_mark_count"); a != nil {
			tb.tunnelMarkCount = d.full(a.val.rng)
		}
		tb.diags = d.since(n)
		fd.daemons = append(fd.daemons, tb)
	}
	for _, bl := range f.blocksOf("bgp") {
		n := len(d.diags)
		tb := topBlock{at: d.full(bl.typeRange), def: d.full(bl.defRange)}
		tb.bgp = d.decodeBGP(bl)
		tb.diags = d.since(n)
		fd.bgps = append(fd.bgps, tb)
	}
	n := len(d.diags)
	blocks := f.blocksOf("service")
	fd.services = make([]*Service, 0, len(blocks))
	fd.metas = make([]*serviceMeta, 0, len(blocks))
	svcs := make([]Service, len(blocks)) // one allocation for all
	metas := make([]serviceMeta, len(blocks))
	for i, bl := range blocks {
		svcs[i], metas[i] = d.decodeService(bl)
		fd.services = append(fd.services, &svcs[i])
		fd.metas = append(fd.metas, &metas[i])
	}
	fd.svcDiags = d.since(n)
	return fd
}

// decodeFiles sets fds[i] to decodeFile of srcs[i] for each i in todo. A
// file decodes on its own, so a cold load of many files decodes them on
// every CPU the process has (at a start nothing else is running yet); a
// reload of a few decodes them in place.
func decodeFiles(srcs []source, todo []int, fds []*fileDecode) {
	each(len(todo), min(runtime.GOMAXPROCS(0), len(todo)/parallelMin), func(k int) {
		i := todo[k]
		fds[i] = decodeFile(srcs[i].name, srcs[i].data)
	})
}

// parallelMin is the fewest files per goroutine worth starting one: a
// one-line edit reads and decodes its one file on the caller's.
const parallelMin = 16

// each calls f(k) for every k in [0, n), on workers goroutines, or on the
// caller's alone when workers < 2. Calls for different k must not share
// what they write.
func each(n, workers int, f func(k int)) {
	if workers < 2 {
		for k := range n {
			f(k)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for k := int(next.Add(1)) - 1; k < n; k = int(next.Add(1)) - 1 {
				f(k)
			}
		})
	}
	wg.Wait()
}

// parse parses src with hclsyntax into the decoder's tree, for a file
// fastParse declines: the body, or nil when it has syntax errors, and what
// the parse reported.
func parse(name string, src []byte) (*body, hcl.Diagnostics) {
	f, diags := hclsyntax.ParseConfig(src, name, hcl.InitialPos)
	if diags.HasErrors() || f == nil {
		return nil, diags
	}
	hb, ok := f.Body.(*hclsyntax.Body)
	if !ok {
		return nil, diags
	}
	b := convertBody(hb, &diags)
	if diags.HasErrors() {
		return nil, diags
	}
	return b, diags
}

// since returns the problems reported after the first n, clipped so that
// later reports cannot write into it.
func (d *decoder) since(n int) []diag { return slices.Clip(d.diags[n:]) }

// load is the whole load of files already in memory.
func (l *Loader) load(srcs []source) (*Config, error) {
	// Decode what changed, and forget the files that are gone.
	fds := make([]*fileDecode, len(srcs))
	if l.files == nil {
		l.files = make(map[string]*fileDecode, len(srcs))
	}
	var todo []int // the files to decode
	known, before := 0, len(l.files)
	for i, s := range srcs {
		fd := l.files[s.name]
		if fd != nil {
			known++
		}
		if s.data != nil || fd == nil {
			if fd == nil || fd.sum != sha256.Sum256(s.data) {
				todo = append(todo, i)
				continue
			}
			fd = fd.clone() // the same content: the same decode
			fd.stat, fd.readAt = s.stat, s.readAt
			l.files[s.name] = fd
		}
		fds[i] = fd
	}
	decodeFiles(srcs, todo, fds)
	l.decoded = len(todo)
	for _, i := range todo {
		fds[i].stat, fds[i].readAt = srcs[i].stat, srcs[i].readAt
		l.files[srcs[i].name] = fds[i]
	}
	nServices := 0
	for _, fd := range fds {
		nServices += len(fd.services)
	}
	if known < before { // some files of the last load are gone
		for name := range l.files {
			if _, ok := slices.BinarySearchFunc(srcs, name, func(s source, n string) int { return strings.Compare(s.name, n) }); !ok {
				delete(l.files, name)
			}
		}
	}

	// Syntax errors come alone: decoding a half-parsed file gives noise.
	var parseDiags hcl.Diagnostics
	for _, fd := range fds {
		parseDiags = append(parseDiags, fd.parse...)
	}
	if parseDiags.HasErrors() {
		return nil, resolve(srcs, fromHCL(srcs, parseDiags))
	}

	cfg := &Config{Daemon: DefaultDaemon(), Files: make([]string, 0, len(srcs)), Contents: make([][]byte, 0, len(srcs))}
	// Pointers into the cache, not copies: validate only reads them, and
	// cfg.Services is these same pointers, sorted.
	svcs := make([]*Service, 0, nServices)
	metas := make([]*serviceMeta, 0, nServices)
	d := &decoder{} // collects the problems afresh: resolve sorts them in place
	var daemon, bgp *topBlock
	for i, fd := range fds {
		cfg.Files = append(cfg.Files, srcs[i].name)
		cfg.Contents = append(cfg.Contents, fd.data) // the cache's copy, not another
		d.diags = append(d.diags, fd.top...)
		for j := range fd.daemons {
			tb := &fd.daemons[j]
			if daemon != nil {
				d.errorAt(tb.at, daemon.at, "keep a single daemon block, in one file", "more than one daemon block")
				continue
			}
			daemon, cfg.Daemon = tb, tb.daemon
			d.diags = append(d.diags, tb.diags...)
		}
		for j := range fd.bgps {
			tb := &fd.bgps[j]
			if bgp != nil {
				d.errorAt(tb.at, bgp.at, "keep a single bgp block, in one file; list every router as a neighbor in it", "more than one bgp block")
				continue
			}
			bgp, cfg.BGP = tb, tb.bgp
			d.diags = append(d.diags, tb.diags...)
		}
		svcs = append(svcs, fd.services...)
		metas = append(metas, fd.metas...)
		d.diags = append(d.diags, fd.svcDiags...)
	}
	cfg.Digest = digest(srcs, fds)
	d.validate(cfg, svcs, metas, daemon)
	if len(d.diags) > 0 {
		if ds := resolve(srcs, d.diags); ds.HasErrors() {
			return nil, ds
		}
	}
	return cfg, nil
}

// digest is Config.Digest of the loaded files.
func digest(srcs []source, fds []*fileDecode) [32]byte {
	d := NewDigester()
	for i, s := range srcs {
		d.Add(s.name, fds[i].sum)
	}
	return d.Sum()
}

// Digester computes Config.Digest from files given in the order a load reads
// them (sorted by path): each base name and the sha256 of its content, so that
// moving text from one file to the next changes it. Whoever copies the files
// checks the copy against the Config with it, without decoding them again.
type Digester struct{ h hash.Hash }

// NewDigester starts a digest.
func NewDigester() *Digester { return &Digester{h: sha256.New()} }

// Add adds the file named name (its base name counts) whose content has the
// sha256 sum.
func (d *Digester) Add(name string, sum [32]byte) {
	base := filepath.Base(name)
	var lenBuf [8]byte
	binary.BigEndian.PutUint64(lenBuf[:], uint64(len(base)))
	d.h.Write(lenBuf[:])
	d.h.Write([]byte(base))
	d.h.Write(sum[:])
}

// Sum is the digest of the files added.
func (d *Digester) Sum() [32]byte {
	var out [32]byte
	d.h.Sum(out[:0])
	return out
}
