package admin

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/fedplane/fedplane/api"
)

// This file encodes the envoy list of list_envoys by hand: with 10,000
// envoys, encoding/json's reflection was most of the director's time for the
// command. The output is byte for byte what encoding/json makes of the same
// values (TestAppendEnvoyJSON and FuzzAppendJSONString compare them).

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string, escaped as encoding/json
// escapes it: HTML-safe, invalid UTF-8 replaced by U+FFFD, and U+2028 and
// U+2029 escaped.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= ' ' && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendJSONTime appends t as time.Time's MarshalJSON does (RFC 3339 with
// nanoseconds), for years 0 to 9999, the only ones the director stores.
func appendJSONTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// appendJSONStrings appends ss as a JSON array of strings, null when nil.
func appendJSONStrings(b []byte, ss []string) []byte {
	if ss == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
	}
	return append(b, ']')
}

// appendEnvoyJSON appends e as encoding/json encodes an api.Envoy.
//
// devices is the envoy's stored GPU list, JSON of api.CUDADevice that the
// director wrote itself; it goes out as is, "" as an empty list.
// gpuColumn is the GPU column of an envoy whose stored device list is
// devices.
func gpuColumn(devices string) string {
	var devs []api.CUDADevice
	if devices != "" && devices != "[]" && json.Unmarshal([]byte(devices), &devs) != nil {
		return "?"
	}
	return api.GPUSummary(devs)
}

func appendEnvoyJSON(b []byte, e *api.Envoy, devices string) []byte {
	b = append(b, `{"name":`...)
	b = appendJSONString(b, e.Name)
	b = append(b, `,"online":`...)
	b = strconv.AppendBool(b, e.Online)
	b = append(b, `,"lastSeen":`...)
	b = appendJSONTime(b, e.LastSeen)
	b = append(b, `,"experiment":`...)
	b = appendJSONString(b, e.Experiment)
	b = append(b, `,"experimentRunning":`...)
	b = strconv.AppendBool(b, e.ExperimentRunning)
	b = append(b, `,"samples":`...)
	b = strconv.AppendUint(b, e.Samples, 10)
	b = append(b, `,"shard":`...)
	b = appendJSONString(b, e.Shard)
	b = append(b, `,"sampleShape":`...)
	b = appendJSONStrings(b, e.SampleShape)
	b = append(b, `,"targetShape":`...)
	b = appendJSONStrings(b, e.TargetShape)
	b = append(b, `,"registeredAt":`...)
	b = appendJSONTime(b, e.RegisteredAt)
	b = append(b, `,"cudaDevices":`...)
	if devices == "" || devices == "null" {
		devices = "[]"
	}
	b = append(b, devices...)
	return append(b, '}')
}
