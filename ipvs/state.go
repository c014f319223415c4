package ipvs

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"

	"github.com/kglb/kglb/internal/atomicfile"
)

// StateFile is the name of the ownership record under the state directory.
const StateFile = "ipvs-services.json"

// stateFile is the ownership record: the keys of the services kglb created.
// It is what lets kglb leave everyone else's services alone and adopt its
// own after a restart.
type stateFile struct {
	Version  int            `json:"version"`
	Services []stateService `json:"services"`
}

type stateService struct {
	Family   string     `json:"family"`
	Protocol string     `json:"protocol,omitempty"`
	Addr     netip.Addr `json:"addr,omitzero"`
	Port     uint16     `json:"port,omitempty"`
	FWMark   uint32     `json:"fwmark,omitempty"`
}

func familyFromString(s string) (Family, bool) {
	switch s {
	case "ipv4":
		return IPv4, true
	case "ipv6":
		return IPv6, true
	}
	return 0, false
}

func protocolFromString(s string) (Protocol, bool) {
	switch s {
	case "tcp":
		return TCP, true
	case "udp":
		return UDP, true
	case "sctp":
		return SCTP, true
	}
	return 0, false
}

// loadOwned reads the ownership record. A missing file is an empty record
// (a first start); a file that cannot be parsed is an error, never an empty
// record: treating it as empty would turn kglb's own services into foreign
// ones it can no longer manage.
func loadOwned(path string) (map[Key]bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[Key]bool{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read ipvs state file: %w", err)
	}
	corrupt := func(why string) error {
		return fmt.Errorf("ipvs state file %s is corrupt (%s): fix it or move it away; without it kglb treats every existing IPVS service as foreign and will not touch them", path, why)
	}
	var sf stateFile
	if err := json.Unmarshal(b, &sf); err != nil {
		return nil, corrupt(err.Error())
	}
	if sf.Version != 1 {
		return nil, corrupt(fmt.Sprintf("unknown version %d", sf.Version))
	}
	owned := make(map[Key]bool, len(sf.Services))
	for i, s := range sf.Services {
		f, ok := familyFromString(s.Family)
		if !ok {
			return nil, corrupt(fmt.Sprintf("service %d: unknown family %q", i, s.Family))
		}
		var k Key
		if s.FWMark != 0 {
			k = MarkKey(f, s.FWMark)
		} else {
			p, ok := protocolFromString(s.Protocol)
			if !ok {
				return nil, corrupt(fmt.Sprintf("service %d: unknown protocol %q", i, s.Protocol))
			}
			k = Key{Family: f, Protocol: p, Addr: s.Addr, Port: s.Port}
		}
		if err := k.validate(); err != nil {
			return nil, corrupt(fmt.Sprintf("service %d: %v", i, err))
		}
		owned[k] = true
	}
	return owned, nil
}

// saveOwned writes the record atomically: a temporary file in the same
// directory, synced, then renamed over the old one, so a crash leaves
// either the old or the new record, never a torn one.
func saveOwned(path string, owned map[Key]bool) error {
	keys := make([]Key, 0, len(owned))
	for k := range owned {
		keys = append(keys, k)
	}
	SortKeys(keys)
	sf := stateFile{Version: 1, Services: make([]stateService, 0, len(keys))}
	for _, k := range keys {
		s := stateService{Family: k.Family.String(), FWMark: k.FWMark}
		if k.FWMark == 0 {
			s.Protocol, s.Addr, s.Port = k.Protocol.String(), k.Addr, k.Port
		}
		sf.Services = append(sf.Services, s)
	}
	b, err := json.MarshalIndent(sf, "", " ")
	if err != nil {
		return fmt.Errorf("encode ipvs state: %w", err)
	}
	b = append(b, '\n')
	if err := atomicfile.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("write ipvs state: %w", err)
	}
	return nil
}
