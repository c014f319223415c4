package main

import "testing"

// A /proc/net/ip_vs of Linux 6.1 (ip_vs_info_seq_show): the header, a
// service with two reals of 10.1.0.0/16 (one at weight 0), one real outside
// it, and a fwmark service.
const ipvsText = `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
TCP  0AC80001:0050 wrr
  -> 0A010002:0050      Masq    0      0          0
  -> 0A010001:0050      Masq    1      0          3
  -> 0A020001:0050      Masq    1      0          0
FWM  00000007 wrr
  -> 0A010003:0000      Route   100    0          0
`

func TestCount(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		n, up  int
	}{
		{"0A01", 3, 2},
		{"0A0100", 3, 2},
		{"0A02", 1, 1},
		{"0A03", 0, 0},
		{"", 4, 3},
	} {
		n, up := count([]byte(ipvsText), []byte(tc.prefix))
		if n != tc.n || up != tc.up {
			t.Errorf("count with prefix %q: %d reals, %d up; want %d, %d", tc.prefix, n, up, tc.n, tc.up)
		}
	}
	// The last line need not end in a newline.
	if n, up := count([]byte("  -> 0A010001:0050      Masq    2      0          0"), []byte("0A01")); n != 1 || up != 1 {
		t.Errorf("count of a last line without a newline: %d, %d; want 1, 1", n, up)
	}
}
