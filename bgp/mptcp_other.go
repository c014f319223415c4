//go:build !linux

package bgp

func listenersUseMPTCP() bool { return false }
