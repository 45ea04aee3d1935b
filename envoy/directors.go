package envoy

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
)

// Several directors: the replicas of one federation (README "Director
// replicas"), for a site that reaches them without a load balancer in
// front. The envoy keeps one gRPC connection, to one replica at a time,
// and lets gRPC's pick_first policy choose it: the addresses are tried in
// the order given and the first that takes the connection serves every
// call; when that connection fails, the next call starts over from the
// first address. Calls cut off by the failure end with Unavailable, which
// the envoy's retries (retry.go) already send again, and each resumes
// where a replica of the same federation holds it: a heartbeat that a
// replica answers NotFound registers the envoy again, a long poll is
// simply asked again, a download resumes from the bytes held and an
// upload by its id. round_robin would spread the calls, but hold a
// connection to every replica from every envoy, multiplying what each
// connected envoy costs the directors for no gain in a failover.

// replicasScheme is the scheme of the gRPC target of several directors,
// resolved by the envoy's own resolver to their addresses.
const replicasScheme = "fedplane-directors"

// checkDirectors accepts one gRPC target (host:port, or a target with a
// scheme), or several host:port addresses, none empty or given twice.
func checkDirectors(dirs []string) error {
	switch {
	case len(dirs) == 0:
		return errors.New("director address is required")
	case len(dirs) == 1:
		return checkDirector(dirs[0])
	}
	for i, d := range dirs {
		host, port, err := net.SplitHostPort(d)
		switch {
		case d == "":
			return fmt.Errorf("director address %d of %d is empty", i+1, len(dirs))
		case err != nil || host == "" || port == "" || strings.Contains(d, "/"):
			return fmt.Errorf("director address %q: with several directors, each is host:port", d)
		case slices.Contains(dirs[:i], d):
			return fmt.Errorf("director address %q is given twice", d)
		}
	}
	return nil
}

// directorTarget returns the gRPC target that reaches the directors and
// the dial options it needs: one director is dialled as it is given, so a
// target with a scheme keeps its own resolver; several go through a
// resolver of their own that hands their addresses, in order, to
// pick_first. Each address carries its own name as its TLS server name
// (and :authority), so that each replica's certificate is checked against
// the name dialled for it, not the first's; a grpc.WithAuthority dial
// option (--tls-server-name) names one for all of them instead.
//
// The resolver serves one ClientConn only: call directorTarget once for
// each grpc.NewClient.
func directorTarget(dirs []string) (string, []grpc.DialOption) {
	if len(dirs) == 1 {
		return dirs[0], nil
	}
	eps := make([]resolver.Endpoint, len(dirs))
	for i, d := range dirs {
		eps[i] = resolver.Endpoint{Addresses: []resolver.Address{{Addr: d, ServerName: d}}}
	}
	r := manual.NewBuilderWithScheme(replicasScheme)
	r.InitialState(resolver.State{Endpoints: eps})
	// The target's own text names the first director, in logs and in
	// the authority of a call before an address is picked.
	return replicasScheme + ":///" + dirs[0], []grpc.DialOption{grpc.WithResolvers(r)}
}

// dial opens the envoy's one connection to its directors (grpc.NewClient
// connects lazily, at the first call).
func (e *Envoy) dial() (*grpc.ClientConn, error) {
	target, opts := directorTarget(e.cfg.Directors)
	conn, err := grpc.NewClient(target, append(e.dialOptions(), opts...)...)
	if err != nil {
		return nil, fmt.Errorf("director %s: %w", strings.Join(e.cfg.Directors, ","), err)
	}
	return conn, nil
}
