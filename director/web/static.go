package web

import (
	"embed"
	"net/http"
)

// assets are the console's page, script and style sheet, written by hand
// and embedded: there is no front-end build, and the page loads nothing
// from anywhere but the director (its Content-Security-Policy says so too).
//
//go:embed static/index.html static/app.js static/app.css
var assets embed.FS

// static serves the embedded file name with its content type. The files
// hold no data, so they are served to anyone, as the login page needs the
// style sheet.
func (s *Server) static(name, contentType string) http.HandlerFunc {
	b, err := assets.ReadFile("static/" + name)
	if err != nil {
		panic("web: embedded file missing: " + name) // the embed directive lists it
	}
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		if w.Header().Get("Cache-Control") == "" {
			w.Header().Set("Cache-Control", "no-cache") // a new director's files at once
		}
		w.Write(b)
	}
}
