// Package npy reads and writes 2-D little-endian float32 arrays in NumPy's .npy format (version 1.0), the
// file numpy.load opens: a magic string, a version, a header that is a Python dict literal
// {'descr': '<f4', 'fortran_order': False, 'shape': (rows, cols), } padded with spaces to a multiple of 64 bytes
// and ending in a newline, then the rows in C order.
//
// Writer appends rows to a file whose header is rewritten with the final row count on Close, so a long run can
// stream rows out and be resumed (Append) after an interruption.
package npy

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"strconv"
)

const (
	magic      = "\x93NUMPY"
	headerSize = 128 // magic, version, length and the padded dict: room for any shape we write
)

// header is the .npy header of a [rows, cols] float32 array, headerSize bytes.
func header(rows, cols int) []byte {
	dict := fmt.Sprintf("{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }", rows, cols)
	b := make([]byte, 0, headerSize)
	b = append(b, magic...)
	b = append(b, 1, 0)
	b = binary.LittleEndian.AppendUint16(b, uint16(headerSize-10))
	b = append(b, dict...)
	for len(b) < headerSize-1 {
		b = append(b, ' ')
	}
	return append(b, '\n')
}

var shapeRE = regexp.MustCompile(`'shape':\s*\((\d+),\s*(\d+),?\s*\)`)

// readHeader parses a version 1.0 or 2.0 header of a C-order little-endian float32 2-D array and returns the
// shape and the data offset.
func readHeader(r io.Reader, name string) (rows, cols int, offset int64, err error) {
	pre := make([]byte, 8)
	if _, err := io.ReadFull(r, pre); err != nil || string(pre[:6]) != magic {
		return 0, 0, 0, fmt.Errorf("%s: not a .npy file", name)
	}
	var n int
	switch pre[6] {
	case 1:
		var l [2]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return 0, 0, 0, fmt.Errorf("%s: %w", name, err)
		}
		n, offset = int(binary.LittleEndian.Uint16(l[:])), 10
	case 2, 3:
		var l [4]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return 0, 0, 0, fmt.Errorf("%s: %w", name, err)
		}
		n, offset = int(binary.LittleEndian.Uint32(l[:])), 12
	default:
		return 0, 0, 0, fmt.Errorf("%s: .npy version %d is not supported", name, pre[6])
	}
	if n > 1<<16 {
		return 0, 0, 0, fmt.Errorf("%s: .npy header of %d bytes", name, n)
	}
	h := make([]byte, n)
	if _, err := io.ReadFull(r, h); err != nil {
		return 0, 0, 0, fmt.Errorf("%s: %w", name, err)
	}
	s := string(h)
	if !regexp.MustCompile(`'descr':\s*'<f4'`).MatchString(s) || !regexp.MustCompile(`'fortran_order':\s*False`).MatchString(s) {
		return 0, 0, 0, fmt.Errorf("%s: want a C-order little-endian float32 array ('<f4'), header %s", name, s)
	}
	m := shapeRE.FindStringSubmatch(s)
	if m == nil {
		return 0, 0, 0, fmt.Errorf("%s: want a 2-D array, header %s", name, s)
	}
	rows, _ = strconv.Atoi(m[1])
	cols, _ = strconv.Atoi(m[2])
	return rows, cols, offset + int64(n), nil
}

// Read reads a whole [rows, cols] float32 array.
func Read(path string) (data []float32, rows, cols int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, 0, err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	rows, cols, _, err = readHeader(br, path)
	if err != nil {
		return nil, 0, 0, err
	}
	if rows*cols > 1<<34 {
		return nil, 0, 0, fmt.Errorf("%s: shape (%d, %d) is too large", path, rows, cols)
	}
	data = make([]float32, rows*cols)
	buf := make([]byte, 4*cols)
	for r := range rows {
		if _, err := io.ReadFull(br, buf); err != nil {
			return nil, 0, 0, fmt.Errorf("%s: row %d of %d: %w", path, r, rows, err)
		}
		for c := range cols {
			data[r*cols+c] = math.Float32frombits(binary.LittleEndian.Uint32(buf[4*c:]))
		}
	}
	return data, rows, cols, nil
}

// Writer streams the rows of a [rows, cols] float32 array to a file.
type Writer struct {
	f          *os.File
	w          *bufio.Writer
	rows, cols int
	buf        []byte
}

// Create starts a new array of cols columns at path (replacing it).
func Create(path string, cols int) (*Writer, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	w := &Writer{f: f, w: bufio.NewWriterSize(f, 1<<20), cols: cols, buf: make([]byte, 4*cols)}
	if _, err := w.w.Write(header(0, cols)); err != nil {
		f.Close()
		return nil, err
	}
	return w, nil
}

// Append continues the array a Writer wrote at path, keeping its first keep rows (an interrupted run may have
// written more; they are cut). It fails if the file has fewer rows or another width.
func Append(path string, cols, keep int) (*Writer, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err == nil && st.Size() < headerSize {
		err = fmt.Errorf("%s: truncated .npy file", path)
	}
	var c int
	var off int64
	if err == nil {
		_, c, off, err = readHeader(f, path)
	}
	if err == nil && (c != cols || off != headerSize) {
		err = fmt.Errorf("%s: %d columns (header %d bytes), want %d columns", path, c, off, cols)
	}
	if err == nil {
		if have := (st.Size() - headerSize) / int64(4*cols); have < int64(keep) {
			err = fmt.Errorf("%s holds %d rows, fewer than the %d lines already scored", path, have, keep)
		}
	}
	end := headerSize + int64(keep)*int64(4*cols)
	if err == nil {
		err = f.Truncate(end)
	}
	if err == nil {
		_, err = f.Seek(end, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return &Writer{f: f, w: bufio.NewWriterSize(f, 1<<20), rows: keep, cols: cols, buf: make([]byte, 4*cols)}, nil
}

// Row appends one row of cols values.
func (w *Writer) Row(v []float32) error {
	if len(v) != w.cols {
		return fmt.Errorf("npy: row of %d values, want %d", len(v), w.cols)
	}
	for i, x := range v {
		binary.LittleEndian.PutUint32(w.buf[4*i:], math.Float32bits(x))
	}
	w.rows++
	_, err := w.w.Write(w.buf)
	return err
}

// Flush writes the buffered rows and the header with the row count so far, so that the file is a valid
// array of every row written.
func (w *Writer) Flush() error {
	if err := w.w.Flush(); err != nil {
		return err
	}
	_, err := w.f.WriteAt(header(w.rows, w.cols), 0)
	return err
}

// Close flushes, syncs and closes the file.
func (w *Writer) Close() error {
	err := w.Flush()
	if err == nil {
		err = w.f.Sync()
	}
	return errors.Join(err, w.f.Close())
}
