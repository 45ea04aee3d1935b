package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3 keeps blobs as objects of an S3-compatible bucket, under a prefix,
// and reads them through a local cache of whole copies (cache.go). Several
// directors may share one.
type S3 struct {
	client  *minio.Client
	bucket  string
	prefix  string // "" or a clean path without a trailing slash
	dataDir string
	cache   *cache
}

// openS3 connects to bucket and checks that it exists.
func openS3(ctx context.Context, bucket, prefix string, o Options) (*S3, error) {
	size := o.CacheSize
	if size == 0 {
		size = DefaultCacheSize
	}
	if size < 0 {
		return nil, fmt.Errorf("%w: blob cache size %d: must not be negative", ErrConfig, size)
	}
	endpoint := firstOf(o.Endpoint, o.Getenv("AWS_ENDPOINT_URL_S3"), o.Getenv("AWS_ENDPOINT_URL"), "https://s3.amazonaws.com")
	host, secure, err := parseEndpoint(endpoint, o.Insecure)
	if err != nil {
		return nil, err
	}
	var creds *credentials.Credentials
	if id := o.Getenv("AWS_ACCESS_KEY_ID"); id != "" {
		creds = credentials.NewStaticV4(id, o.Getenv("AWS_SECRET_ACCESS_KEY"), o.Getenv("AWS_SESSION_TOKEN"))
	} else {
		// AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, profile
		// AWS_PROFILE or default.
		creds = credentials.NewFileAWSCredentials("", "")
	}
	client, err := minio.New(host, &minio.Options{
		Creds:  creds,
		Secure: secure,
		Region: firstOf(o.Region, o.Getenv("AWS_REGION"), o.Getenv("AWS_DEFAULT_REGION")),
	})
	if err != nil {
		return nil, fmt.Errorf("%w: blob store s3://%s: %w", ErrConfig, bucket, err)
	}
	ok, err := client.BucketExists(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("blob store s3://%s at %s: %w", bucket, endpoint, err)
	}
	if !ok {
		return nil, fmt.Errorf("blob store s3://%s: no such bucket at %s", bucket, endpoint)
	}
	c, err := newCache(o.DataDir, size)
	if err != nil {
		return nil, err
	}
	return &S3{client: client, bucket: bucket, prefix: prefix, dataDir: o.DataDir, cache: c}, nil
}

// parseEndpoint splits an endpoint URL into minio's host[:port] and
// whether it is https. Plain http is allowed to loopback only, unless
// insecure: credentials are signed, not hidden, and blobs travel in clear.
func parseEndpoint(endpoint string, insecure bool) (host string, secure bool, err error) {
	if !strings.Contains(endpoint, "://") {
		endpoint = "https://" + endpoint
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", false, fmt.Errorf("%w: blob endpoint %q: %w", ErrConfig, endpoint, err)
	}
	if u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return "", false, fmt.Errorf("%w: blob endpoint %q: want scheme://host[:port] and nothing more", ErrConfig, endpoint)
	}
	switch u.Scheme {
	case "https":
		return u.Host, true, nil
	case "http":
		if !insecure && !isLoopback(u.Hostname()) {
			return "", false, fmt.Errorf("%w: blob endpoint %q: plain http beyond loopback sends every blob in clear; use https, or --insecure", ErrConfig, endpoint)
		}
		return u.Host, false, nil
	default:
		return "", false, fmt.Errorf("%w: blob endpoint %q: scheme %q: want https or http", ErrConfig, endpoint, u.Scheme)
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func firstOf(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

// Shared is true: other directors may write to the bucket.
func (s *S3) Shared() bool { return true }

// Bucket and Prefix name where the store keeps its objects.
func (s *S3) Bucket() string { return s.bucket }

// Prefix is the folder of the bucket the store keeps its objects in.
func (s *S3) Prefix() string { return s.prefix }

// CacheStats returns how many Opens the read cache answered from disk
// (hits) and how many downloaded (misses).
func (s *S3) CacheStats() (hits, misses int64) { return s.cache.hits.Load(), s.cache.misses.Load() }

// object is key's object name in the bucket.
func (s *S3) object(key string) string {
	if s.prefix == "" {
		return key
	}
	return s.prefix + "/" + key
}

// Create creates a temp file under the data dir's tmp/.
func (s *S3) Create(pattern string) (*os.File, error) { return createTemp(s.dataDir, pattern) }

// Commit uploads tmp whole (multipart, in parallel, when it is large; the
// client retries failed parts), checks the size the bucket took, and
// moves tmp into the read cache: the director that writes a model reads
// it next. S3 makes an object visible only once its upload completes, so
// no reader sees part of one.
func (s *S3) Commit(ctx context.Context, tmp *os.File, key string) error {
	if err := ValidKey(key); err != nil {
		tmp.Close()
		return err
	}
	fi, err := tmp.Stat()
	if err != nil {
		tmp.Close()
		return err
	}
	info, err := s.client.PutObject(ctx, s.bucket, s.object(key), io.NewSectionReader(tmp, 0, fi.Size()), fi.Size(),
		minio.PutObjectOptions{ContentType: "application/octet-stream"})
	if cerr := tmp.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close %s: %w", tmp.Name(), cerr)
	}
	if err != nil {
		return fmt.Errorf("upload %s: %w", key, err)
	}
	if info.Size != fi.Size() {
		return fmt.Errorf("upload %s: the bucket took %d bytes of %d", key, info.Size, fi.Size())
	}
	if err := s.cache.put(key, info.ETag, tmp.Name(), fi.Size()); err != nil {
		os.Remove(tmp.Name())
	}
	return nil
}

// notFound maps S3's answer for a missing object to fs.ErrNotExist.
func notFound(key string, err error) error {
	r := minio.ToErrorResponse(err)
	if r.Code == "NoSuchKey" || r.StatusCode == http.StatusNotFound {
		return fmt.Errorf("blob %s: %w", key, fs.ErrNotExist)
	}
	return fmt.Errorf("blob %s: %w", key, err)
}

// openAttempts bounds how often Open starts again when the key was
// committed anew between its stat and its download.
const openAttempts = 3

// Open opens the cached copy of the blob, after asking the bucket which
// version (ETag) is current, downloading it on a miss.
func (s *S3) Open(ctx context.Context, key string) (*Reader, error) {
	if err := ValidKey(key); err != nil {
		return nil, err
	}
	for i := 1; ; i++ {
		r, err := s.open(ctx, key)
		if i < openAttempts && minio.ToErrorResponse(errors.Unwrap(err)).Code == "PreconditionFailed" {
			continue
		}
		return r, err
	}
}

func (s *S3) open(ctx context.Context, key string) (*Reader, error) {
	st, err := s.client.StatObject(ctx, s.bucket, s.object(key), minio.StatObjectOptions{})
	if err != nil {
		return nil, notFound(key, err)
	}
	etag := strings.Trim(st.ETag, `"`)
	return s.cache.open(ctx, key, etag, st.Size, st.LastModified, func(ctx context.Context, w *os.File) error {
		opts := minio.GetObjectOptions{}
		if etag != "" {
			// The version stat saw, or an error: not a newer one
			// under the old one's name.
			if err := opts.SetMatchETag(etag); err != nil {
				return err
			}
		}
		obj, err := s.client.GetObject(ctx, s.bucket, s.object(key), opts)
		if err != nil {
			return notFound(key, err)
		}
		defer obj.Close()
		// Read one byte more than expected, so a longer body shows.
		if _, err := io.Copy(w, io.LimitReader(obj, st.Size+1)); err != nil {
			return notFound(key, err)
		}
		return nil
	})
}

// Stat asks the bucket about key's object.
func (s *S3) Stat(ctx context.Context, key string) (Info, error) {
	if err := ValidKey(key); err != nil {
		return Info{}, err
	}
	st, err := s.client.StatObject(ctx, s.bucket, s.object(key), minio.StatObjectOptions{})
	if err != nil {
		return Info{}, notFound(key, err)
	}
	return Info{Key: key, Size: st.Size, ModTime: st.LastModified}, nil
}

// Remove deletes key's object and its cached copies.
func (s *S3) Remove(ctx context.Context, key string) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	s.cache.drop(key)
	if err := s.client.RemoveObject(ctx, s.bucket, s.object(key), minio.RemoveObjectOptions{}); err != nil {
		if errors.Is(notFound(key, err), fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("remove blob %s: %w", key, err)
	}
	return nil
}

// RemovePrefix deletes every object in the folder prefix, in batches
// (DeleteObjects), and their cached copies.
func (s *S3) RemovePrefix(ctx context.Context, prefix string) error {
	if err := ValidKey(prefix); err != nil {
		return err
	}
	s.cache.dropPrefix(prefix)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	objects := s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.object(prefix) + "/", Recursive: true})
	var listErr error
	send := make(chan minio.ObjectInfo)
	go func() {
		defer close(send)
		for o := range objects {
			if o.Err != nil {
				listErr = o.Err
				return
			}
			select {
			case send <- o:
			case <-ctx.Done():
				return
			}
		}
	}()
	var errs []error
	for e := range s.client.RemoveObjects(ctx, s.bucket, send, minio.RemoveObjectsOptions{}) {
		errs = append(errs, fmt.Errorf("remove blob %s: %w", e.ObjectName, e.Err))
	}
	if listErr != nil { // the sender has returned: send is closed
		errs = append(errs, fmt.Errorf("list blobs under %s: %w", prefix, listErr))
	}
	return errors.Join(errs...)
}

// List lists the objects in the folder prefix.
func (s *S3) List(ctx context.Context, prefix string, fn func(Info) error) error {
	if err := ValidKey(prefix); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the listing's goroutine if fn stops early
	strip := ""
	if s.prefix != "" {
		strip = s.prefix + "/"
	}
	for o := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.object(prefix) + "/", Recursive: true}) {
		if o.Err != nil {
			return fmt.Errorf("list blobs under %s: %w", prefix, o.Err)
		}
		if err := fn(Info{Key: strings.TrimPrefix(o.Key, strip), Size: o.Size, ModTime: o.LastModified}); err != nil {
			return err
		}
	}
	return nil
}
