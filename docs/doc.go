// Package docs holds the project's design documents as Markdown. Its test
// checks that every repository path they name exists, so the documents
// cannot drift from the tree they describe.
package docs
