# Turns a text file into a C header with one string constant (cmake -P).
file(READ ${IN} content)
string(REPLACE "\\" "\\\\" content "${content}")
string(REPLACE "\"" "\\\"" content "${content}")
string(REPLACE "\n" "\\n\"\n\"" content "${content}")
file(WRITE ${OUT} "/* Generated from default_config.json: do not edit. */\nstatic const char sg_default_config_json[] =\n\"${content}\";\n")
