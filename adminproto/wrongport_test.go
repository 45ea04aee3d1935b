package adminproto

import (
	"crypto/tls"
	"errors"
	"fmt"
	"testing"
)

func TestPeerOfReply(t *testing.T) {
	tests := []struct {
		name  string
		first []byte
		want  Peer
	}{
		{"HTTP/2 settings", []byte{0, 0, 0x12, 0x4, 0, 0, 0, 0, 0}, PeerGRPC},
		{"HTTP/2 settings ack", []byte{0, 0, 0, 0x4, 0x1, 0, 0, 0, 0}, PeerGRPC},
		{"HTTP/2 goaway", []byte{0, 0, 0x8, 0x7, 0, 0, 0, 0, 0}, PeerGRPC},
		{"TLS alert", []byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46}, PeerTLS},
		{"TLS server hello", []byte{0x16, 0x03, 0x03, 0x00, 0x7a}, PeerTLS},
		{"admin text reply", []byte(`{"time": "`), 0},
		{"admin binary reply", []byte{BinaryMarker, 0, 0, 0, 2}, 0},
		{"HTTP/2 data frame", []byte{0, 0, 0x12, 0x0, 0, 0, 0, 0, 1}, 0},
		{"too short", []byte{0, 0, 0x12}, 0},
		{"nothing", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := peerOfReply(tt.first); got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPeerOfHandshake(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want Peer
	}{
		{"admin port in the clear", tls.RecordHeaderError{RecordHeader: [5]byte{'{', '"', 't', 'i', 'm'}}, PeerPlaintext},
		{"gRPC port in the clear", fmt.Errorf("dial: %w", tls.RecordHeaderError{RecordHeader: [5]byte{0, 0, 0x12, 0x4, 0}}), PeerGRPC},
		{"gRPC port refusing the protocol", errors.New("remote error: tls: no application protocol"), PeerGRPC},
		{"bad certificate", errors.New("remote error: tls: bad certificate"), 0},
		{"refused", errors.New("connection refused"), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := peerOfHandshake(tt.err); got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}
