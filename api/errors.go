package api

import (
	"strconv"

	"github.com/valyala/fasthttp"
)

// Error is a Matrix error response: an HTTP status, an errcode and a message.
// Handlers return it; the router writes it. Extra fields (retry_after_ms, ...)
// go in Extra, which must already be valid JSON members ("\"k\":v").
type Error struct {
	Status  int
	Code    string
	Message string
	Extra   string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func merr(status int, code, msg string) *Error {
	return &Error{Status: status, Code: code, Message: msg}
}

func errNotJSON(msg string) *Error   { return merr(400, "M_NOT_JSON", msg) }
func errBadJSON(msg string) *Error   { return merr(400, "M_BAD_JSON", msg) }
func errInvalid(msg string) *Error   { return merr(400, "M_INVALID_PARAM", msg) }
func errMissing(msg string) *Error   { return merr(400, "M_MISSING_PARAM", msg) }
func errForbidden(msg string) *Error { return merr(403, "M_FORBIDDEN", msg) }
func errNotFound(msg string) *Error  { return merr(404, "M_NOT_FOUND", msg) }
func errUnknown(msg string) *Error   { return merr(500, "M_UNKNOWN", msg) }
func errUnrecognized() *Error        { return merr(404, "M_UNRECOGNIZED", "Unrecognized request") }
func errMethod() *Error              { return merr(405, "M_UNRECOGNIZED", "Unrecognized request method") }
func errTooLarge() *Error            { return merr(413, "M_TOO_LARGE", "Request body too large") }
func errLimit(retryMS int64) *Error {
	return &Error{Status: 429, Code: "M_LIMIT_EXCEEDED", Message: "Too many requests",
		Extra: `"retry_after_ms":` + strconv.FormatInt(retryMS, 10)}
}

func writeError(ctx *fasthttp.RequestCtx, e *Error) {
	ctx.Response.Header.SetContentType("application/json")
	ctx.SetStatusCode(e.Status)
	b := make([]byte, 0, 64+len(e.Message))
	b = append(b, `{"errcode":`...)
	b = strconv.AppendQuote(b, e.Code)
	b = append(b, `,"error":`...)
	b = appendJSONString(b, e.Message)
	if e.Extra != "" {
		b = append(b, ',')
		b = append(b, e.Extra...)
	}
	b = append(b, '}')
	ctx.SetBody(b)
}

// appendJSONString appends s as a JSON string literal.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			switch c {
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
