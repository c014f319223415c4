package config

import (
	"crypto/sha256"
	"encoding/binary"
)

// Fingerprint identifies what a running daemon would apply from c: its
// Digest (the files' names and contents) and the content of every
// neighbor's password_file, which lives outside the config directory's
// *.hcl files. A reload compares fingerprints, so a rotated TCP-MD5 key is
// a change even when no .hcl file changed. The secrets enter only as a
// sha256 and never leave this function; a file that cannot be read counts
// as its error, so a file that becomes readable is a change too.
func (c *Config) Fingerprint() [32]byte {
	if len(c.BGP.Neighbors) == 0 {
		return c.Digest
	}
	h := sha256.New()
	h.Write(c.Digest[:])
	for _, n := range c.BGP.Neighbors {
		if n.PasswordFile == "" {
			continue
		}
		var lenBuf [8]byte
		binary.BigEndian.PutUint64(lenBuf[:], uint64(len(n.Name)))
		h.Write(lenBuf[:])
		h.Write([]byte(n.Name))
		// readFile, not os.ReadFile: the file was checked at load, but may
		// have been swapped since, and this runs in the reload loop; a FIFO
		// must not hang it, nor a device fill memory.
		b, err := readFile(n.PasswordFile, nil)
		if err != nil {
			b = []byte("error: " + err.Error())
		}
		sum := sha256.Sum256(b)
		clear(b)
		h.Write(sum[:])
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}
