package api

// gRPC metadata keys fedplane adds to OpenFL's messages. OpenFL peers ignore
// them; fedplane's envoy reads them.
const (
	// MDReason, a response header of UpdateShardInfo, says why a shard was
	// refused (OpenFL's reply has only accepted=false).
	MDReason = "fedplane-reason"
	// MDStop, a response header of UpdateEnvoyStatus, names an ended
	// experiment that the heartbeating envoy still runs: it should stop it.
	MDStop = "fedplane-stop"
	// MDArchiveSize and MDArchiveSHA256, response headers of
	// GetExperimentData, describe the archive so the envoy can check what it
	// received.
	MDArchiveSize   = "fedplane-archive-size"
	MDArchiveSHA256 = "fedplane-archive-sha256"
	// MDJobSignature, a response header of GetExperimentData, is the
	// submitter's signature of the archive (pki.JobSignature, JSON) when
	// the job was signed. A -bin key: gRPC carries it base64-encoded.
	MDJobSignature = "fedplane-job-signature-bin"
	// MDAwaitingApproval, a request header of UpdateEnvoyStatus, names the
	// experiment that the envoy holds until its site operator approves or
	// rejects it (site policy "approval: manual").
	MDAwaitingApproval = "fedplane-awaiting-approval"
	// MDMaxUnpacked, MDMaxEntries, MDMaxRatio and MDMaxArchiveRatio,
	// response headers of GetExperimentData, are the limits the director
	// checked the archive against (job.Limits): the envoy unpacks it under
	// these or its own, whichever are lower.
	MDMaxUnpacked     = "fedplane-max-unpacked-bytes"
	MDMaxEntries      = "fedplane-max-entries"
	MDMaxRatio        = "fedplane-max-ratio"
	MDMaxArchiveRatio = "fedplane-max-archive-ratio"
	// MDOffset, a request header of GetExperimentData, is how many bytes
	// of the archive the envoy already holds from a cut attempt: the
	// director streams the rest from there and echoes the offset as a
	// response header. Without the echo (a director that does not resume)
	// the stream is the whole archive. OpenFL envoys send none and get the
	// whole archive, as always. The final size and sha256 check covers the
	// whole file, held bytes included.
	//
	// As a request header of SendLocalTaskResults, with MDUploadID, it is
	// where the stream's bytes begin in the whole serialized results:
	// 0 at first, the bytes the director holds on a resume.
	MDOffset = "fedplane-offset"
	// MDUploadID, MDSize and MDSHA256, request headers of
	// SendLocalTaskResults, make the results stream resumable after a cut
	// (README "Transfers that resume"): the upload's id (32 random hex
	// digits, new per round's results), the whole serialized results'
	// size and sha256 (64 lowercase hex digits). OpenFL envoys send none:
	// their streams are taken whole.
	MDUploadID = "fedplane-upload-id"
	MDSize     = "fedplane-size"
	MDSHA256   = "fedplane-sha256"
	// MDClientID is OpenFL's identity header of a frontend without TLS.
	MDClientID = "client_id"
)
