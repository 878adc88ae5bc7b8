package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
)

// HashOrder asks for the SHA-256 of every chunk of a disk.
type HashOrder struct {
	Disk      string `json:"disk"`
	ChunkSize int64  `json:"chunkSize"`
}

// PushOrder names the chunks the store lacks (by index: each distinct chunk once) and gives
// presigned PUT URLs for the packs they go into.
type PushOrder struct {
	Disk      string  `json:"disk"`
	ChunkSize int64   `json:"chunkSize"`
	Upload    []int64 `json:"upload"`
	Packs     []struct {
		ID  string `json:"id"`
		URL string `json:"url"`
	} `json:"packs"`
	PackTarget  int64 `json:"packTarget"`
	Level       int   `json:"level"`
	Concurrency int   `json:"concurrency"`
	// BaseDisk holds an earlier version (verified); Bases name, for chunks to upload, the chunk
	// there (and its hash) a patch may be made against.
	BaseDisk string `json:"baseDisk"`
	Bases    []struct {
		Index     int64  `json:"index"`
		BaseIndex int64  `json:"baseIndex"`
		Hash      string `json:"hash"`
	} `json:"bases"`
	// MaxBytesPerSecond caps the upload (0: no cap).
	MaxBytesPerSecond int64 `json:"maxBytesPerSecond"`
}

// patchWorthIt: a patch replaces the whole chunk only when it saves at least half: a bigger one
// saves few bytes and costs a cold pull its base as well.
func patchWorthIt(patch, full int) bool { return patch*2 <= full }

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

func runHash(o *HashOrder) {
	if o.Disk == "" || o.ChunkSize <= 0 {
		fail(exitBadOrder, "order needs disk and chunkSize")
	}
	f, err := os.Open(o.Disk)
	if err != nil {
		fail(exitFailed, "cannot open %s: %v", o.Disk, err)
	}
	defer f.Close()
	st, _ := f.Stat()
	size := st.Size()
	total := (size + o.ChunkSize - 1) / o.ChunkSize
	hashes := make([]*string, total)
	var doneBytes atomic.Int64
	started := time.Now()
	stop := ticker(500*time.Millisecond, func() {
		emit(map[string]any{"event": "progress", "hashedBytes": doneBytes.Load(), "size": size})
	})
	defer stop()
	// Two readers: hashing a 100 GB disk is bound by SHA-256 on one core otherwise.
	var next atomic.Int64
	var wg sync.WaitGroup
	var readErr error
	var errOnce sync.Once
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, o.ChunkSize)
			for {
				i := next.Add(1) - 1
				if i >= total {
					return
				}
				n := min(o.ChunkSize, size-i*o.ChunkSize)
				if _, err := f.ReadAt(buf[:n], i*o.ChunkSize); err != nil && err != io.EOF {
					errOnce.Do(func() { readErr = err })
					return
				}
				if !isZero(buf[:n]) {
					sum := sha256.Sum256(buf[:n])
					h := hex.EncodeToString(sum[:])
					hashes[i] = &h
				}
				doneBytes.Add(n)
			}
		}()
	}
	wg.Wait()
	if readErr != nil {
		fail(exitFailed, "reading %s: %v", o.Disk, readErr)
	}
	stop()
	emit(map[string]any{"event": "done", "size": size, "hashes": hashes, "seconds": time.Since(started).Seconds()})
}

type packOut struct {
	id     string
	url    string
	body   bytes.Buffer
	chunks []map[string]any
}

func runPush(o *PushOrder) {
	if o.Disk == "" || o.ChunkSize <= 0 || o.PackTarget <= 0 {
		fail(exitBadOrder, "order needs disk, chunkSize and packTarget")
	}
	f, err := os.Open(o.Disk)
	if err != nil {
		fail(exitFailed, "cannot open %s: %v", o.Disk, err)
	}
	defer f.Close()
	st, _ := f.Stat()
	size := st.Size()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(max(o.Level, 1))), zstd.WithEncoderConcurrency(1))
	if err != nil {
		fail(exitFailed, "zstd: %v", err)
	}
	started := time.Now()
	var uploaded, read atomic.Int64
	stop := ticker(500*time.Millisecond, func() {
		emit(map[string]any{"event": "progress", "readBytes": read.Load(), "uploadedBytes": uploaded.Load()})
	})
	defer stop()

	var base *os.File
	bases := map[int64]int{}
	if o.BaseDisk != "" && len(o.Bases) > 0 {
		if base, err = os.Open(o.BaseDisk); err != nil {
			fail(exitFailed, "cannot open the base disk %s: %v", o.BaseDisk, err)
		}
		defer base.Close()
		for k, b := range o.Bases {
			bases[b.Index] = k
		}
	}
	patcher := newPatchEncoder(o.ChunkSize)
	baseBuf := make([]byte, o.ChunkSize)
	var patched atomic.Int64

	client := &http.Client{Timeout: 10 * time.Minute}
	limit := &limiter{rate: float64(o.MaxBytesPerSecond)}
	lanes := max(1, o.Concurrency)
	if o.Concurrency <= 0 {
		lanes = 4
	}
	// Packs upload while the next ones fill; a pack is reported only once S3 has it.
	uploads := make(chan *packOut)
	var wg sync.WaitGroup
	var upErr error
	var failed atomic.Bool
	var errOnce sync.Once
	for l := 0; l < lanes; l++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range uploads {
				if err := putWithRetries(client, p.url, p.body.Bytes(), limit); err != nil {
					errOnce.Do(func() { upErr = fmt.Errorf("PUT pack %s: %w", p.id, err) })
					failed.Store(true)
					continue
				}
				uploaded.Add(int64(p.body.Len()))
				emit(map[string]any{"event": "pack", "pack": p.id, "bytes": p.body.Len(), "chunks": p.chunks})
			}
		}()
	}
	slot := 0
	var cur *packOut
	open := func() {
		if slot >= len(o.Packs) {
			fail(exitBadOrder, "the order gave %d pack URLs, too few for the chunks to upload", len(o.Packs))
		}
		cur = &packOut{id: o.Packs[slot].ID, url: o.Packs[slot].URL}
		slot++
	}
	buf := make([]byte, o.ChunkSize)
	for _, i := range o.Upload {
		if failed.Load() {
			break
		}
		n := min(o.ChunkSize, size-i*o.ChunkSize)
		if n <= 0 {
			fail(exitBadOrder, "chunk %d lies beyond the disk's %d bytes", i, size)
		}
		if _, err := f.ReadAt(buf[:n], i*o.ChunkSize); err != nil && err != io.EOF {
			fail(exitFailed, "reading %s: %v", o.Disk, err)
		}
		read.Add(n)
		sum := sha256.Sum256(buf[:n])
		z := enc.EncodeAll(buf[:n], nil)
		entry := map[string]any{"index": i, "hash": hex.EncodeToString(sum[:])}
		if k, ok := bases[i]; ok {
			b := o.Bases[k]
			// The base is read back and checked: a patch against the wrong bytes would never apply.
			if m, err := base.ReadAt(baseBuf[:n], b.BaseIndex*o.ChunkSize); (err == nil || err == io.EOF) && int64(m) == n {
				if bs := sha256.Sum256(baseBuf[:n]); hex.EncodeToString(bs[:]) == b.Hash && worthTrying(baseBuf[:n], buf[:n]) {
					if p, err := patcher.patch(baseBuf[:n], buf[:n]); err == nil && patchWorthIt(len(p), len(z)) {
						z = p
						entry["base"] = b.Hash
						patched.Add(1)
					}
				}
			}
		}
		if cur == nil {
			open()
		}
		entry["offset"], entry["length"] = cur.body.Len(), len(z)
		cur.chunks = append(cur.chunks, entry)
		cur.body.Write(z)
		if int64(cur.body.Len()) >= o.PackTarget {
			uploads <- cur
			cur = nil
		}
	}
	if cur != nil && !failed.Load() {
		uploads <- cur
	}
	close(uploads)
	wg.Wait()
	if upErr != nil {
		fail(exitFailed, "%v", upErr)
	}
	stop()
	emit(map[string]any{"event": "done", "uploadedBytes": uploaded.Load(), "patched": patched.Load(), "seconds": time.Since(started).Seconds()})
}

func putWithRetries(client *http.Client, url string, body []byte, limit *limiter) error {
	var err error
	for attempt := 0; attempt < 4; attempt++ {
		if attempt > 0 {
			time.Sleep(time.Duration(200<<attempt) * time.Millisecond)
		}
		var req *http.Request
		if req, err = http.NewRequest(http.MethodPut, url, paced{bytes.NewReader(body), limit}); err != nil {
			return err
		}
		req.ContentLength = int64(len(body))
		var res *http.Response
		if res, err = client.Do(req); err != nil {
			continue
		}
		msg, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		res.Body.Close()
		if res.StatusCode == http.StatusOK {
			return nil
		}
		err = fmt.Errorf("HTTP %d: %s", res.StatusCode, bytes.TrimSpace(msg))
	}
	return err
}
