package server

import (
	"strconv"

	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/vektah/gqlparser/v2/ast"
)

func itoa64(n int64) string { return strconv.FormatInt(n, 10) }

func graphqlLRU(size int) *lru.LRU[*ast.QueryDocument] {
	return lru.New[*ast.QueryDocument](size)
}
