package bgp

import (
	"fmt"
	"sort"

	"github.com/hashicorp/go-hclog"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// gobgpLogger adapts GoBGP's logger interface to go-hclog.
//
// Levels: GoBGP's Info messages ("Add a peer configuration", "Peer Up") are
// logged at Debug because the speaker itself logs every session state
// change at Info with kglb's stable keys; GoBGP's Debug is Debug too. Warn
// and Error pass through. GoBGP calls Fatal and Panic only on internal
// logic errors and does not expect them to return, so both log and panic.
//
// Every message that names a peer (GoBGP's "Key" field) at Warn or above,
// and every "Peer Down", is handed to onPeerEvent so /status can show the
// peer's last error.
type gobgpLogger struct {
	log         hclog.Logger
	onPeerEvent func(addr, msg string)
}

var _ gobgplog.Logger = (*gobgpLogger)(nil)

// args flattens GoBGP's fields into sorted hclog key/value pairs.
func args(fields gobgplog.Fields) []any {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		if k == gobgplog.FieldFacility {
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		v := fields[k]
		if err, ok := v.(error); ok {
			v = err.Error()
		}
		out = append(out, k, v)
	}
	return out
}

func (l *gobgpLogger) note(msg string, fields gobgplog.Fields, always bool) {
	if l.onPeerEvent == nil {
		return
	}
	key, _ := fields["Key"].(string)
	if key == "" || (!always && msg != "Peer Down") {
		return
	}
	text := msg
	for _, f := range []string{"Reason", "Err", "Error"} {
		if v, ok := fields[f]; ok && v != nil {
			text += ": " + fmt.Sprint(v)
		}
	}
	l.onPeerEvent(key, text)
}

func (l *gobgpLogger) Panic(msg string, fields gobgplog.Fields) {
	l.log.Error(msg, args(fields)...)
	panic("gobgp: " + msg)
}

func (l *gobgpLogger) Fatal(msg string, fields gobgplog.Fields) {
	l.log.Error(msg, args(fields)...)
	panic("gobgp: " + msg)
}

func (l *gobgpLogger) Error(msg string, fields gobgplog.Fields) {
	l.note(msg, fields, true)
	l.log.Error(msg, args(fields)...)
}

func (l *gobgpLogger) Warn(msg string, fields gobgplog.Fields) {
	l.note(msg, fields, true)
	l.log.Warn(msg, args(fields)...)
}

func (l *gobgpLogger) Info(msg string, fields gobgplog.Fields) {
	l.note(msg, fields, false)
	if l.log.IsDebug() {
		l.log.Debug(msg, args(fields)...)
	}
}

func (l *gobgpLogger) Debug(msg string, fields gobgplog.Fields) {
	if l.log.IsDebug() {
		l.log.Debug(msg, args(fields)...)
	}
}

// SetLevel is ignored: the level is the hclog logger's, which the daemon
// controls.
func (l *gobgpLogger) SetLevel(gobgplog.LogLevel) {}

// GetLevel reports the hclog level, so GoBGP skips building debug messages
// nobody reads.
func (l *gobgpLogger) GetLevel() gobgplog.LogLevel {
	switch {
	case l.log.IsTrace():
		return gobgplog.TraceLevel
	case l.log.IsDebug():
		return gobgplog.DebugLevel
	case l.log.IsInfo():
		return gobgplog.InfoLevel
	case l.log.IsWarn():
		return gobgplog.WarnLevel
	default:
		return gobgplog.ErrorLevel
	}
}
