package envoy

import (
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// wrongPortHints say what to do when the director address answers, but not
// as the director's gRPC port does: it is the admin port (fladmin's), or it
// speaks TLS and the envoy does not, or the reverse. grpc-go reports these
// failures only as the text of an Unavailable status, so the text is what
// is matched, each entry by all its strings. The hints name the flags of
// `envoy start`, which is where the address and the certificates are given.
var wrongPortHints = []struct {
	match []string
	hint  string
}{
	{
		// The first bytes that answered are no HTTP/2 frame: the admin
		// port's JSON, or a TLS record from a server that speaks TLS.
		match: []string{"server preface", "frame too large"},
		hint: "what answers at --director does not speak HTTP/2 (gRPC): if it is the director's admin port (fladmin's), " +
			"point --director at its gRPC port (director serve --grpc-listen, default " + DefaultDirector + "); " +
			"if the director serves TLS, give --tls-ca, --tls-cert and --tls-key",
	},
	{
		match: []string{"initial http2 frame from server is not a settings frame"},
		hint: "what answers at --director does not speak HTTP/2 (gRPC): is it the director's admin port (fladmin's)? " +
			"point --director at its gRPC port (director serve --grpc-listen, default " + DefaultDirector + ")",
	},
	{
		// A TLS server that selects no application protocol, as the
		// admin port does with TLS; gRPC needs h2.
		match: []string{"missing selected ALPN property"},
		hint: "what answers at --director speaks TLS but not HTTP/2 (gRPC): it is likely the director's admin port (fladmin's); " +
			"point --director at its gRPC port (director serve --grpc-listen, default " + DefaultDirector + ")",
	},
	{
		match: []string{"first record does not look like a TLS handshake"},
		hint: "what answers at --director does not speak TLS: if the director serves without TLS, leave out --tls-ca, " +
			"--tls-cert and --tls-key; otherwise --director is not the director's gRPC port",
	},
	{
		// Hung up before a whole first frame: a TLS server does so to a
		// client in the clear, at once or after a TLS alert (7 bytes, less
		// than a frame header).
		match: []string{"error reading server preface", "EOF"},
		hint:  "the director hung up before speaking HTTP/2: if it serves TLS, give --tls-ca, --tls-cert and --tls-key",
	},
	{
		match: []string{"error reading server preface", "connection reset by peer"},
		hint:  "the director hung up before speaking HTTP/2: if it serves TLS, give --tls-ca, --tls-cert and --tls-key",
	},
}

// dialHint returns what to do about err, an error from calling the
// director, when it shows that the director address is not the director's
// gRPC port or differs from the envoy about TLS; "" otherwise.
func dialHint(err error) string {
	if status.Code(err) != codes.Unavailable {
		return ""
	}
	msg := status.Convert(err).Message()
	for _, h := range wrongPortHints {
		all := true
		for _, m := range h.match {
			all = all && strings.Contains(msg, m)
		}
		if all {
			return h.hint
		}
	}
	return ""
}
