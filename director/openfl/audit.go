package openfl

import (
	"context"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/pki"
)

// The audit trail takes every call that is not an envoy's own work:
// frontends' and admins' calls, and every refused call whoever made it.
// An envoy's heartbeats, task fetches and reports, which come by the
// thousand, are in the event stream's terms instead (online, rounds).

// auditUnary records a unary call once its reply's code is known. It is
// the outermost interceptor, so the code is the one the caller gets.
func (s *service) auditUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if s.audited(ctx, info.FullMethod, err) {
		m, _ := req.(proto.Message)
		s.record(ctx, info.FullMethod, named(m), err)
	}
	return resp, err
}

// auditStream records a stream once it ends, with what its first message
// named.
func (s *service) auditStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	as := &auditedStream{ServerStream: ss}
	err := handler(srv, as)
	if s.audited(ss.Context(), info.FullMethod, err) {
		s.record(ss.Context(), info.FullMethod, as.target, err)
	}
	return err
}

// auditedStream keeps what the first message received names.
type auditedStream struct {
	grpc.ServerStream
	target string
	seen   bool
}

func (a *auditedStream) RecvMsg(m any) error {
	err := a.ServerStream.RecvMsg(m)
	if err == nil && !a.seen {
		a.seen = true
		pm, _ := m.(proto.Message)
		a.target = named(pm)
	}
	return err
}

// audited says whether a call goes into the trail: refused calls always;
// others unless they are an envoy's (by its certificate with TLS, by the
// method's rule without).
func (s *service) audited(ctx context.Context, method string, err error) bool {
	if c := status.Code(err); c == codes.PermissionDenied || c == codes.Unauthenticated {
		return true
	}
	if s.tls {
		id, ok := pki.FromContext(ctx)
		return !ok || id.Kind != pki.KindEnvoy
	}
	r, ok := director.RuleOf(method)
	return !ok || r.Who == director.Admins
}

func (s *service) record(ctx context.Context, method, target string, err error) {
	c := s.caller(ctx)
	if s.tls {
		if _, ok := pki.FromContext(ctx); !ok {
			c = director.Caller{Name: "unauthenticated"}
		}
	}
	a := api.AuditRecord{
		Caller: c.Name, Org: c.Org, Kind: c.Kind, Role: c.Role, Remote: remoteHost(ctx),
		Channel: api.AuditGRPC, Action: method, Target: target, Outcome: "ok",
	}
	if err != nil {
		st := status.Convert(err)
		a.Outcome, a.Detail = st.Code().String(), st.Message()
	}
	s.d.RecordAudit(a)
}

// remoteHost is the caller's address without its port.
func remoteHost(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return p.Addr.String()
	}
	return host
}

// auditFields are the request fields that name what a call is about, in
// the order they are shown.
var auditFields = []protoreflect.Name{"experiment_name", "name", "model_type", "collaborator_name", "collaborator_names"}

// named describes what request m names: its experiment, model type and
// collaborators, as "field=value" pairs.
func named(m proto.Message) string {
	if m == nil {
		return ""
	}
	r := m.ProtoReflect()
	fields := r.Descriptor().Fields()
	var parts []string
	for _, name := range auditFields {
		fd := fields.ByName(name)
		if fd == nil || !r.Has(fd) {
			continue
		}
		v := r.Get(fd)
		var text string
		switch {
		case fd.IsList():
			l := v.List()
			items := make([]string, 0, min(l.Len(), 16))
			for i := 0; i < l.Len() && i < 16; i++ {
				items = append(items, l.Get(i).String())
			}
			text = strings.Join(items, ",")
		case fd.Kind() == protoreflect.EnumKind:
			if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
				text = string(ev.Name())
			}
		default:
			text = v.String()
		}
		parts = append(parts, string(name)+"="+api.Truncate(text, api.MaxNameLen))
	}
	return strings.Join(parts, " ")
}
