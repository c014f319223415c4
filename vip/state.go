package vip

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kglb/kglb/internal/atomicfile"
)

// stateFile is the name, under the state directory, of the record of the
// addresses kglb owns in address mode. Route mode needs no record: the
// kernel keeps the owner in each route's protocol.
const stateFile = "vip-addresses"

// ownedFile is the on-disk set of owned addresses: one address per line,
// sorted, '#' starts a comment.
//
// The record names the link its addresses were added on, in a comment line
// "# link <name>" (a comment, so that an older kglb still reads the file):
// an address is kglb's on that link only. After vip_interface changes, an
// address that kglb once added on its old link and that the operator has on
// the new one is the operator's; a record without the line (written before
// it existed) is taken to be of the link in use.
//
// Addresses that kglb added on another link, or on this one in address mode
// before vip_mode became route, stay in the record, under their link's own
// "# link" line after the link in use, until kglb has removed them (see
// Reconciler.sweep). An older kglb reading such a record finds a link that
// is not its own and owns nothing: it leaves every address in place.
type ownedFile struct {
	path string
	link string
}

// linkPrefix starts the comment line that names the record's link.
const linkPrefix = "# link "

// load returns the addresses the record names, by link. Addresses before any
// "# link" line are of f.link.
func (f ownedFile) load() (map[string]map[netip.Addr]bool, error) {
	data, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]map[netip.Addr]bool{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read vip ownership record: %w", err)
	}
	byLink := map[string]map[netip.Addr]bool{}
	link := f.link
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if l, ok := strings.CutPrefix(s, linkPrefix); ok {
			link = strings.TrimSpace(l)
			continue
		}
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("read vip ownership record %s:%d: %w (fix or remove the line; kglb then leaves that address alone)", f.path, line, err)
		}
		if byLink[link] == nil {
			byLink[link] = map[netip.Addr]bool{}
		}
		byLink[link][a] = true
	}
	return byLink, nil
}

// save replaces the record atomically with byLink, the addresses kglb owns
// on each link: f.link's first, then the others' that are left to remove. It
// writes a temporary file in the same directory, syncs it, renames it over
// the old one and syncs the directory, so a crash leaves either the old
// record or the new one.
func (f ownedFile) save(byLink map[string]map[netip.Addr]bool) error {
	var b bytes.Buffer
	b.WriteString("# VIP addresses kglb added (address mode); kglb removes only these.\n")
	section := func(link string) {
		b.WriteString(linkPrefix + link + "\n")
		for _, a := range slices.SortedFunc(maps.Keys(byLink[link]), netip.Addr.Compare) {
			b.WriteString(a.String())
			b.WriteByte('\n')
		}
	}
	section(f.link)
	for _, l := range slices.Sorted(maps.Keys(byLink)) {
		if l != f.link && len(byLink[l]) > 0 {
			section(l)
		}
	}

	dir := filepath.Dir(f.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write vip ownership record: %w", err)
	}
	if err := atomicfile.WriteFile(f.path, b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("write vip ownership record: %w", err)
	}
	return nil
}
