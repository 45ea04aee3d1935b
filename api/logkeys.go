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
	LogDatabase = "database"  // the store's backend: sqlite or postgres
	LogDirector = "director"  // the director address an envoy dials
	LogRPC      = "rpc"       // a gRPC method an envoy called
	LogRetryIn  = "retry_in"  // the wait before a retry
	LogShard    = "shard"     // an envoy's shard path
	LogWorkDir  = "work_dir"  // an envoy's work dir
	LogPeriod   = "period"    // a heartbeat period
	LogTensors  = "tensors"   // a tensor count
	LogDataSize = "data_size" // samples trained on
	LogMetrics  = "metrics"   // a metric count
	LogCode     = "code"      // an exit code
	LogLog      = "log"       // a log file's path
	LogTask     = "task"      // an OpenFL task name
	LogSleep    = "sleep"     // a wait the director asked for
	LogHint     = "hint"      // what to do about an error
	LogPGID     = "pgid"      // a training process group
	LogGRPC     = "grpc"      // the address of the gRPC port
	LogAdmin    = "admin"     // the address of the admin port
	LogWeb      = "web"       // the address of the web console
	LogSamples  = "samples"   // a shard's sample count
	LogKind     = "kind"      // a certificate's kind (envoy, admin, director)
	LogRole     = "role"      // an admin certificate's role
	LogEnvoys   = "envoys"    // envoy names
	LogMissing  = "missing"   // envoy names that did not report
	LogRounds   = "rounds"    // a job's round count
	LogReports  = "reports"   // how many envoys reported a round
	LogFinal    = "final"     // whether a round was the job's last
	LogPruned   = "pruned"    // rounds whose models keep_models removed
	LogKeep     = "keep_models"
	LogHealth   = "health_check_period"
	LogOffline  = "offline_after"
	// Replicas (director).
	LogPort   = "port"   // which port of a replica: grpc, admin
	LogHolder = "holder" // a replica's coordinator lease holder id
	LogEpoch  = "epoch"  // a coordinator lease's epoch
	LogTarget = "target" // the coordinator a standby relays to
	// Site trust (envoy).
	LogSubmitter = "submitter" // who signed a job (certificate CN)
	LogCommand   = "command"   // a training command
	LogSHA256    = "sha256"    // an archive's digest
	LogApproval  = "approval"  // a site policy's approval mode
)
