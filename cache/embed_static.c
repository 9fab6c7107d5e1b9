/* The `static` embedder: placeholder until the distilled table lands. */
#include <stdio.h>

#include "semgate/embed.h"
#include "embed_int.h"

int sg__embed_static_new(sg_embedder_t **out, const char *path, char *err, size_t errlen)
{
	*out = NULL;
	snprintf(err, errlen, "%s: the static embedder is not available in this build", path);
	return SG_EINVAL;
}
