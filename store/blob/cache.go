package blob

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// CacheDir is the folder under the data dir that holds the S3 read cache.
const CacheDir = "blob-cache"

// cache keeps whole copies of remote blobs on local disk, so that reads at
// random offsets (the aggregator's, the model server's) are local. A copy
// is named by its key and the object's ETag, so a key committed again
// (a training log replaced, a round aggregated again after a crash) is a
// new copy, never a stale one. Copies are downloaded to a temp file,
// checked for their size, fsynced and renamed in: a copy in the cache is
// whole. Past the size cap the least recently opened copies are removed;
// a Reader open on one keeps reading it (unlinked files stay readable).
type cache struct {
	dir     string // the cache's folder
	dataDir string // whose tmp/ takes downloads: the same file system
	max     int64

	mu      sync.Mutex
	entries map[string]*cacheEntry // name (relative to dir) -> copy
	total   int64
	tick    uint64
	fills   map[string]chan struct{} // names being downloaded: closed when done

	hits, misses atomic.Int64
}

type cacheEntry struct {
	size int64
	used uint64 // tick of the last open: the smallest goes first
}

// newCache opens the cache under dataDir, counting the copies a previous
// run left (each whole: only whole ones are renamed in).
func newCache(dataDir string, max int64) (*cache, error) {
	c := &cache{dir: filepath.Join(dataDir, CacheDir), dataDir: dataDir, max: max,
		entries: map[string]*cacheEntry{}, fills: map[string]chan struct{}{}}
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return nil, fmt.Errorf("blob cache: %w", err)
	}
	type found struct {
		name string
		fi   fs.FileInfo
	}
	var all []found
	err := filepath.WalkDir(c.dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(c.dir, p)
		if err != nil {
			return err
		}
		all = append(all, found{filepath.ToSlash(rel), fi})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("blob cache: %w", err)
	}
	// The oldest first, so the newest survive the first eviction.
	sort.Slice(all, func(i, j int) bool { return all[i].fi.ModTime().Before(all[j].fi.ModTime()) })
	for _, f := range all {
		c.tick++
		c.entries[f.name] = &cacheEntry{size: f.fi.Size(), used: c.tick}
		c.total += f.fi.Size()
	}
	c.mu.Lock()
	c.evictLocked()
	c.mu.Unlock()
	return c, nil
}

// cacheName is the copy of key at ETag etag, relative to the cache's
// folder.
func cacheName(key, etag string) string {
	tag := strings.Trim(etag, `"`)
	clean := tag != "" && len(tag) <= 80 && strings.IndexFunc(tag, func(r rune) bool {
		return !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '-')
	}) < 0
	if !clean {
		sum := sha256.Sum256([]byte(etag))
		tag = hex.EncodeToString(sum[:16])
	}
	return key + "~" + tag
}

func (c *cache) path(name string) string { return filepath.Join(c.dir, filepath.FromSlash(name)) }

// open opens the copy of key at etag, downloading it with fetch, which
// writes the whole blob into the file it is given, on a miss. size is the
// object's size: a download of another size is refused.
func (c *cache) open(ctx context.Context, key, etag string, size int64, modTime time.Time, fetch func(ctx context.Context, w *os.File) error) (*Reader, error) {
	name := cacheName(key, etag)
	counted := false
	for {
		c.mu.Lock()
		if e := c.entries[name]; e != nil {
			f, err := os.Open(c.path(name))
			if err == nil {
				c.tick++
				e.used = c.tick
				c.mu.Unlock()
				if !counted {
					c.hits.Add(1)
				}
				return newReader(f, key, modTime)
			}
			// Removed behind the cache's back: forget it, fetch again.
			delete(c.entries, name)
			c.total -= e.size
		}
		if !counted {
			c.misses.Add(1)
			counted = true
		}
		if done, busy := c.fills[name]; busy {
			c.mu.Unlock()
			select {
			case <-done:
				continue // the copy is in, or the next try downloads it
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		done := make(chan struct{})
		c.fills[name] = done
		c.mu.Unlock()
		r, err := c.fill(ctx, name, key, size, modTime, fetch)
		c.mu.Lock()
		delete(c.fills, name)
		close(done)
		c.mu.Unlock()
		return r, err
	}
}

// fill downloads the copy name of key and opens it.
func (c *cache) fill(ctx context.Context, name, key string, size int64, modTime time.Time, fetch func(ctx context.Context, w *os.File) error) (*Reader, error) {
	tmp, err := createTemp(c.dataDir, "cache-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	err = fetch(ctx, tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if err != nil {
		tmp.Close()
		return nil, err
	}
	fi, err := tmp.Stat()
	if err != nil {
		tmp.Close()
		return nil, err
	}
	if fi.Size() != size {
		tmp.Close()
		return nil, fmt.Errorf("blob %s: downloaded %d bytes, the object has %d", key, fi.Size(), size)
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	return c.add(name, key, tmp.Name(), size, modTime)
}

// put moves the file src, a blob of size bytes just committed under key
// at etag, into the cache, so that the committer reads it without a
// download. A blob larger than the cache is removed instead.
func (c *cache) put(key, etag, src string, size int64) error {
	if size > c.max {
		return os.Remove(src)
	}
	r, err := c.add(cacheName(key, etag), key, src, size, time.Time{})
	if err != nil {
		os.Remove(src)
		return err
	}
	return r.Close()
}

// add renames src in as the copy name and opens it.
func (c *cache) add(name, key, src string, size int64, modTime time.Time) (*Reader, error) {
	dst := c.path(name)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return nil, fmt.Errorf("blob cache: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := os.Rename(src, dst); err != nil {
		return nil, fmt.Errorf("blob cache: %w", err)
	}
	f, err := os.Open(dst)
	if err != nil {
		return nil, fmt.Errorf("blob cache: %w", err)
	}
	if old := c.entries[name]; old != nil {
		c.total -= old.size
	}
	c.tick++
	c.entries[name] = &cacheEntry{size: size, used: c.tick}
	c.total += size
	// The copy just opened is the newest, so it goes last, even when it
	// alone is over the cap: f still reads it then.
	c.evictLocked()
	return newReader(f, key, modTime)
}

// evictLocked removes the least recently opened copies until the cache
// holds at most max bytes.
func (c *cache) evictLocked() {
	if c.total <= c.max {
		return
	}
	names := make([]string, 0, len(c.entries))
	for n := range c.entries {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return c.entries[names[i]].used < c.entries[names[j]].used })
	for _, n := range names {
		if c.total <= c.max {
			break
		}
		if err := os.Remove(c.path(n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		c.total -= c.entries[n].size
		delete(c.entries, n)
	}
}

// drop removes the copies of key, at any ETag: the blob was removed.
func (c *cache) drop(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for n, e := range c.entries {
		if k, _, ok := cutLast(n, "~"); ok && k == key {
			os.Remove(c.path(n))
			c.total -= e.size
			delete(c.entries, n)
		}
	}
}

// dropPrefix removes the copies of the keys in the folder prefix.
func (c *cache) dropPrefix(prefix string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for n, e := range c.entries {
		if underPrefix(n, prefix) {
			os.Remove(c.path(n))
			c.total -= e.size
			delete(c.entries, n)
		}
	}
	os.RemoveAll(c.path(prefix)) // the emptied folders
}

// cutLast is strings.Cut at the last sep.
func cutLast(s, sep string) (before, after string, found bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}
