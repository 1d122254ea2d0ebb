/* What the agent reads from QEMU's block graph to release or retire a
 * tier: the name under which a child hangs from the shadow node
 * (x-blockdev-change removes a child by that name, children.N, which
 * changes when a child is added again), the image file (or rbd image)
 * under a tier's node, when giving its space back is safe, and the nodes
 * and files a retired tier leaves behind.
 *
 * Pure parsing of the replies of x-debug-query-block-graph and
 * query-named-block-nodes {"flat": true}. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

/* The edge name from parent to child (node names), e.g. "children.1";
 * NULL when child does not hang from parent. */
char *shd_block_graph_child_name (JsonNode *graph, const char *parent, const char *child);

/* The file under `node`: the filename of the protocol node reached by
 * following each node's only child, through filters (throttle,
 * copy-on-read, preallocate) and a raw format node that maps the whole
 * file, to a node of driver "file".  Punching holes there zeroes exactly
 * the tier's data.  NULL with *why when it is not so (a qcow2 node, say,
 * whose metadata a hole would destroy, or a raw node with an offset). */
char *shd_block_graph_file_under (JsonNode *graph, JsonNode *nodes, const char *node,
                                  char **why);

/* The rbd node under `node`, as shd_block_graph_file_under() finds a
 * file: resizing `node` to 0 and back empties exactly the tier's image. */
char *shd_block_graph_rbd_under (JsonNode *graph, JsonNode *nodes, const char *node,
                                 char **why);

/* The nodes a retired tier's node owns: `node` and, below it, every node
 * whose parents are all in that set, parents before children (the order
 * blockdev-del takes them).  A node shared with another parent stays out,
 * and so does everything under it; so does a backing image (a qcow2
 * tier's base), which other VMs may use.  Empty when `node` is not in the
 * graph. */
GPtrArray *shd_block_graph_owned (JsonNode *graph, const char *node);

/* The files (driver "file", absolute names) among `owned`, from a
 * query-named-block-nodes reply, with in *file_nodes (if not NULL) the
 * node of each; in *rbd_nodes (if not NULL) the rbd nodes; and in *others
 * the other protocol nodes (nbd, ...; rbd without rbd_nodes), whose
 * storage shadowd cannot remove, as "NODE (DRIVER)". */
GPtrArray *shd_block_nodes_files (JsonNode *nodes, GPtrArray *owned, GPtrArray **file_nodes,
                                  GPtrArray **rbd_nodes, GPtrArray **others);

/* A node's filename ("file" of query-named-block-nodes: for an rbd node,
 * "json:{...}" or "rbd:..."), or NULL when the node is not there. */
const char *shd_block_nodes_filename (JsonNode *nodes, const char *node);

/* A node's image actual-size (bytes allocated on the host) from a
 * query-named-block-nodes reply: -1 when the node is not there,
 * SHD_BLOCK_ALLOCATED_UNKNOWN when QEMU does not know it (rbd). */
#define SHD_BLOCK_ALLOCATED_UNKNOWN ((gint64) -2)
gint64 shd_block_nodes_allocated (JsonNode *nodes, const char *node);
/* A node's virtual size: -1 when the node is not there. */
gint64 shd_block_nodes_virtual_size (JsonNode *nodes, const char *node);

G_END_DECLS
