package envoy

import (
	"strconv"

	"google.golang.org/grpc/metadata"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/job"
)

// archiveLimits returns the limits to unpack a job archive under: for each
// field the lower of the envoy's own (Config.ArchiveLimits, defaults where
// unset) and the one the director advertised in GetExperimentData's
// header md. A director can only tighten the envoy's limits: a header that
// is missing, not a positive number, or higher, changes nothing.
func archiveLimits(md metadata.MD, own job.Limits) job.Limits {
	lim := own.WithDefaults()
	lower := func(cur int64, key string) int64 {
		v := md.Get(key)
		if len(v) != 1 {
			return cur
		}
		n, err := strconv.ParseInt(v[0], 10, 64)
		if err != nil || n <= 0 {
			return cur
		}
		return min(cur, n)
	}
	lim.MaxUnpacked = lower(lim.MaxUnpacked, api.MDMaxUnpacked)
	lim.MaxFiles = int(lower(int64(lim.MaxFiles), api.MDMaxEntries))
	lim.MaxRatio = lower(lim.MaxRatio, api.MDMaxRatio)
	lim.MaxArchiveRatio = lower(lim.MaxArchiveRatio, api.MDMaxArchiveRatio)
	return lim
}

// maxEntryOverhead bounds what a zip archive the director accepts spends
// per entry besides the data: a local and a central header, and the name
// twice (at most 4096 bytes, job's limit).
const maxEntryOverhead = 9 << 10

// maxArchiveSize is the largest archive that can unpack within own: its
// data (stored at worst) and each entry's headers.
func maxArchiveSize(own job.Limits) int64 {
	lim := own.WithDefaults()
	return lim.MaxUnpacked + int64(lim.MaxFiles)*maxEntryOverhead + maxEntryOverhead
}
