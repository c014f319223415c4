package vip

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
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
type ownedFile struct {
	path string
	link string
}

// linkPrefix starts the comment line that names the record's link.
const linkPrefix = "# link "

// load returns the addresses the record says kglb owns on f.link. When the
// record is of another link, it owns none there, and other names that link.
func (f ownedFile) load() (owned map[netip.Addr]bool, other string, err error) {
	data, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[netip.Addr]bool{}, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("read vip ownership record: %w", err)
	}
	owned = map[netip.Addr]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if l, ok := strings.CutPrefix(s, linkPrefix); ok {
			if l = strings.TrimSpace(l); l != f.link {
				other = l
			}
			continue
		}
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, "", fmt.Errorf("read vip ownership record %s:%d: %w (fix or remove the line; kglb then leaves that address alone)", f.path, line, err)
		}
		owned[a] = true
	}
	if other != "" {
		return map[netip.Addr]bool{}, other, nil
	}
	return owned, "", nil
}

// save replaces the record atomically: a temporary file in the same
// directory, synced, renamed over the old one, and the directory synced, so
// a crash leaves either the old record or the new one.
func (f ownedFile) save(owned map[netip.Addr]bool) error {
	addrs := make([]netip.Addr, 0, len(owned))
	for a := range owned {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	var b bytes.Buffer
	b.WriteString("# VIP addresses kglb added (address mode); kglb removes only these.\n")
	b.WriteString(linkPrefix + f.link + "\n")
	for _, a := range addrs {
		b.WriteString(a.String())
		b.WriteByte('\n')
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
