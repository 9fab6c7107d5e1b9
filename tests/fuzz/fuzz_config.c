/* Fuzz target: configuration loading (src/config.c), the text of a config
 * file. Every problem must come back as SG_EINVAL with at least one error
 * line naming it, and a config that parses must be usable: every model is
 * found by its name and the router can be built on it. */
#include <stdint.h>
#include <string.h>

#include "fuzz_common.h"
#include "semgate/config.h"
#include "semgate/log.h"
#include "semgate/router.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_log_init();
	/* names a config may give as api_key_env / admin_key_env */
	setenv("OPENAI_API_KEY", "sk-fuzz", 1);
	setenv("SG_FUZZ_KEY", "k", 1);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sg_config_t *cfg = NULL;
	sg_buf_t errors;
	int rc;

	sg_buf_init(&errors, 0);
	rc = sg_config_parse(&cfg, (const char *)data, size, &errors);
	FUZZ_CHECK(rc == 0 || rc == SG_EINVAL, "sg_config_parse: %d", rc);
	if (rc) {
		FUZZ_CHECK(cfg == NULL, "a config returned with an error");
		FUZZ_CHECK(errors.len > 0 && errors.data[errors.len - 1] == '\n',
			   "an error without its line");
	} else {
		FUZZ_CHECK(cfg != NULL && cfg->nmodels > 0, "a config without models");
		for (size_t i = 0; i < cfg->nmodels; i++) {
			const char *name = cfg->models[i].name;
			FUZZ_CHECK(sg_config_find_model(cfg, name, strlen(name)) == &cfg->models[i],
				   "model %zu is not found by its name", i);
		}
		sg_router_t *r = sg_router_new(cfg, 1);
		FUZZ_CHECK(r != NULL, "sg_router_new");
		sg_router_free(r);
	}
	sg_config_free(cfg);
	sg_buf_free(&errors);
	return 0;
}
