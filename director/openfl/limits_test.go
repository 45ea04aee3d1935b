package openfl

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/api/directorpb"
)

func TestRequestSizeCaps(t *testing.T) {
	c := mustServeBufconn(t, mustNew(t, testCfg(t, newFakeClock())))
	req := shard("site-a", 1, []string{"28", "28"}, []string{"1"})
	req.ShardInfo.ShardDescription = strings.Repeat("x", maxUnaryRequest+1)
	_, err := c.dir.UpdateShardInfo(context.Background(), req)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("oversized request: got %v, want ResourceExhausted", err)
	}
	if _, err := c.dir.GetEnvoys(context.Background(), &directorpb.GetEnvoysRequest{}); err != nil {
		t.Fatalf("after an oversized request: %v", err)
	}
}
