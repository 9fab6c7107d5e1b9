/* semgate --pull-model: download a sentence-embedding model from the Hugging
 * Face hub into a directory that sg_encoder_load() reads (semgate/encoder.h).
 * A command of the semgate binary; the server never calls it. */
#ifndef SEMGATE_PULL_MODEL_H
#define SEMGATE_PULL_MODEL_H

/**
 * Run `semgate --pull-model NAME[@REVISION] [--to DIR] [--hub URL] [--force]`.
 * argv holds the argc arguments that follow --pull-model (borrowed). Prints
 * progress and errors to stderr and, on success, one line "model NAME ready in
 * DIR (...)" to stdout. Calls curl_global_init() itself.
 *
 * Returns the process exit code: 0 the model is in DIR and loads; 1 the pull
 * failed (DIR is untouched and no partial directory is left); 2 usage error.
 */
int sg_pull_model_main(int argc, char **argv);

#endif
