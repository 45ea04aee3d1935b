package openfl

import (
	"context"
	"fmt"
	"strconv"

	"google.golang.org/grpc/metadata"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/transferspb"
	"github.com/fedplane/fedplane/director"
)

// transfersService implements fedplane.transfers.Transfers, fedplane's own
// service beside OpenFL's on the gRPC port: an envoy whose task results
// stream was cut asks it how many bytes the director holds, and resends
// from there (README "Transfers that resume"). OpenFL peers never call it.
type transfersService struct {
	transferspb.UnimplementedTransfersServer
	*service
}

// ResultsOffset answers how many bytes of the caller's task results upload
// the director holds. The caller is an envoy (the table); its certificate
// must name the envoy the upload is of.
func (s *transfersService) ResultsOffset(ctx context.Context, req *transferspb.ResultsOffsetRequest) (*transferspb.ResultsOffsetResponse, error) {
	n, err := s.d.ResultsOffset(ctx, req.GetUploadId(), func(envoy string) error { return s.checkEnvoy(ctx, "ResultsOffset", envoy) })
	if err != nil {
		return nil, err
	}
	return &transferspb.ResultsOffsetResponse{Offset: n}, nil
}

// resultsResume reads the request headers that make a task results stream
// resumable: none (an OpenFL envoy's, or an older fedplane's) leaves it
// as it always was; some but not all, or any malformed, is refused before
// a byte is read.
func resultsResume(ctx context.Context) (director.ResultsResume, bool, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	id := md.Get(api.MDUploadID)
	if len(id) == 0 {
		return director.ResultsResume{}, false, nil
	}
	one := func(key string) (string, error) {
		v := md.Get(key)
		if len(v) != 1 {
			return "", fmt.Errorf("%w: a resumable task results stream needs exactly one %s header with %s", api.ErrInvalid, key, api.MDUploadID)
		}
		return v[0], nil
	}
	num := func(key string) (int64, error) {
		v, err := one(key)
		if err != nil {
			return 0, err
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%w: %s %q is not a number of bytes", api.ErrInvalid, key, v)
		}
		return n, nil
	}
	var m director.ResultsResume
	var err error
	if m.ID, err = one(api.MDUploadID); err != nil {
		return m, false, err
	}
	if m.SHA256, err = one(api.MDSHA256); err != nil {
		return m, false, err
	}
	if m.Offset, err = num(api.MDOffset); err != nil {
		return m, false, err
	}
	if m.Size, err = num(api.MDSize); err != nil {
		return m, false, err
	}
	return m, true, nil
}
