/* semgate --distill-static: distil a BERT-family sentence encoder
 * (semgate/encoder.h) into the table of token vectors that the `static`
 * embedder reads (cache/embed_static.c). A command of the semgate binary, run
 * once at set-up; the server never calls it. */
#ifndef SEMGATE_DISTILL_H
#define SEMGATE_DISTILL_H

/**
 * Run `semgate --distill-static MODEL_DIR OUT [--dim N] [--sif A] [--force]`.
 * argv holds the argc arguments that follow --distill-static (borrowed).
 * Prints progress and errors to stderr and, on success, one line
 * "static table OUT ready (...)" to stdout.
 *
 * OUT is a directory: embeddings.safetensors (F32 "embeddings" [vocabulary,
 * N], with the source model's identity and the recipe in its metadata) and
 * the model's tokenizer files. It is built beside OUT and renamed into place
 * once it loads; an existing OUT is replaced only with --force, and only when
 * it is a table directory itself.
 *
 * Returns the process exit code: 0 done; 1 failed (OUT untouched, nothing
 * partial left); 2 usage error.
 */
int sg_distill_main(int argc, char **argv);

#endif
