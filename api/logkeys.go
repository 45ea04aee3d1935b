package api

// Log attribute keys of every fedplane program. Operators' log queries
// read them, so each means one thing everywhere: LogJob is always a job
// (experiment) id, never its name.
const (
	LogJob      = "job"      // a job (experiment) id
	LogJobName  = "job_name" // a job's name from job.json
	LogEnvoy    = "envoy"    // an envoy's name
	LogRound    = "round"    // a round number
	LogErr      = "err"      // the error
	LogMethod   = "method"   // a gRPC method or admin command
	LogReason   = "reason"   // why something was refused or ended
	LogStatus   = "status"   // a job status or an admin reply status
	LogCaller   = "caller"   // who made a request (certificate CN or user)
	LogRemote   = "remote"   // the peer address of a connection
	LogAddr     = "addr"     // an address this program listens on or dials
	LogPath     = "path"     // a file path
	LogBytes    = "bytes"    // a byte count
	LogTook     = "took"     // a duration spent
	LogLastSeen = "last_seen"
	LogVersion  = "version"
	LogDataDir  = "data_dir"
)
