/*
 * The forward target's own configuration: the section that `forward_section`
 * names in our provider section of the application's openssl.cnf (a PKCS#11
 * provider's module path, PIN, quirks, ...), given to the target in the
 * library context we load it into.
 *
 * OpenSSL hands a provider its section only as parameters asked for by name,
 * and a nested section's keys cannot be listed that way. So we read the
 * application's configuration file once more (the one OPENSSL_CONF or the
 * default path names: what the application loaded us from; or the file
 * `forward_config` names, for one loaded with OSSL_LIB_CTX_load_config), walk
 * openssl_conf -> providers -> our name -> forward_section, and load into our
 * library context a configuration of its own that declares the target with
 * a copy of that section's lines. The text holds the PIN: cleansed after use.
 */
#include "provider_target.h"

#include <stdio.h>
#include <string.h>
#include <openssl/bio.h>
#include <openssl/conf.h>
#include <openssl/crypto.h>
#include <openssl/err.h>

#define MAX_DEPTH 8

/* A value as the configuration parser reads it back: every character outside a plain set escaped. */
static void write_value(BIO *out, const char *value)
{
    const char *c;

    for (c = value; *c != '\0'; c++) {
        if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-:,+@%~", *c) == NULL)
            BIO_write(out, "\\", 1);
        BIO_write(out, c, 1);
    }
}

/* Writes SECTION as [AS], then the sections its values name, each under a name of ours. */
static int write_section(BIO *out, const CONF *conf, const char *section, const char *as, int depth)
{
    STACK_OF(CONF_VALUE) *values = NCONF_get_section(conf, section);
    char nested[64];
    int i;

    if (values == NULL || depth > MAX_DEPTH)
        return 0;
    BIO_printf(out, "[%s]\n", as);
    for (i = 0; i < sk_CONF_VALUE_num(values); i++) {
        CONF_VALUE *value = sk_CONF_VALUE_value(values, i);

        BIO_printf(out, "%s = ", value->name);
        if (NCONF_get_section(conf, value->value) != NULL) {
            snprintf(nested, sizeof(nested), "%s_%d", as, i);
            BIO_puts(out, nested);
        } else {
            write_value(out, value->value);
        }
        BIO_puts(out, "\n");
    }
    for (i = 0; i < sk_CONF_VALUE_num(values); i++) {
        CONF_VALUE *value = sk_CONF_VALUE_value(values, i);

        snprintf(nested, sizeof(nested), "%s_%d", as, i);
        if (NCONF_get_section(conf, value->value) != NULL
            && !write_section(out, conf, value->value, nested, depth + 1))
            return 0;
    }
    return 1;
}

/*
 * The value of forward_section for the provider loaded as PROVIDER_NAME, or
 * NULL where its section has none (or there is no such provider section).
 */
static const char *forward_section(const CONF *conf, const char *provider_name)
{
    const char *section;

    if ((section = NCONF_get_string(conf, NULL, "openssl_conf")) == NULL
        || (section = NCONF_get_string(conf, section, "providers")) == NULL
        || (section = NCONF_get_string(conf, section, provider_name)) == NULL
        || NCONF_get_section(conf, section) == NULL)
        return NULL;
    return NCONF_get_string(conf, section, "forward_section");
}

/* Loads TEXT into CONTEXT as its configuration (its modules registered first if nobody has). */
static int load_text(OSSL_LIB_CTX *context, const char *text)
{
    CONF *conf = NCONF_new_ex(context, NULL);
    BIO *in = BIO_new_mem_buf(text, -1);
    long line = 0;
    int ok = 0;

    if (conf != NULL && in != NULL && NCONF_load_bio(conf, in, &line) > 0) {
        ERR_set_mark();
        ok = CONF_modules_load(conf, NULL, 0) > 0;
        if (!ok) {
            ERR_pop_to_mark();
            OPENSSL_load_builtin_modules();
            ok = CONF_modules_load(conf, NULL, 0) > 0;
        } else {
            ERR_clear_last_mark();
        }
    }
    BIO_free(in);
    NCONF_free(conf);
    return ok;
}

int sa_target_configure(OSSL_LIB_CTX *context, const char *provider_name, const char *target,
                        const char *named_file)
{
    char *file = named_file != NULL ? OPENSSL_strdup(named_file) : CONF_get1_default_config_file();
    CONF *conf = NCONF_new(NULL);
    BIO *text = BIO_new(BIO_s_mem());
    const char *section;
    char *data;
    long length, line = 0;
    int ok = 1;

    ERR_set_mark();
    if (file == NULL || conf == NULL || text == NULL || provider_name == NULL
        || NCONF_load(conf, file, &line) <= 0
        || (section = forward_section(conf, provider_name)) == NULL) {
        ERR_pop_to_mark();
        if (named_file == NULL)
            goto done;               /* nothing says how the target is set up: it runs as it is */
        ERR_raise_data(ERR_LIB_PROV, ERR_R_INIT_FAIL, "forward_config %s: no forward_section for %s",
                       named_file, provider_name);
        ok = 0;
        goto done;
    }
    ERR_clear_last_mark();
    if (NCONF_get_section(conf, section) == NULL) {
        ERR_raise_data(ERR_LIB_PROV, ERR_R_INIT_FAIL, "forward_section %s: no such section in %s",
                       section, file);
        ok = 0;
        goto done;
    }
    BIO_printf(text, "openssl_conf = swiftasync_target_init\n"
                     "[swiftasync_target_init]\nproviders = swiftasync_target_providers\n"
                     "[swiftasync_target_providers]\n%s = swiftasync_target\n", target);
    ok = write_section(text, conf, section, "swiftasync_target", 0) && BIO_write(text, "", 1) == 1
        && (length = BIO_get_mem_data(text, &data)) > 0 && load_text(context, data);
    if (!ok)
        ERR_raise_data(ERR_LIB_PROV, ERR_R_INIT_FAIL, "forward_section %s of %s in %s", section,
                       provider_name, file);
done:
    if (text != NULL && (length = BIO_get_mem_data(text, &data)) > 0)
        OPENSSL_cleanse(data, (size_t)length);
    BIO_free(text);
    NCONF_free(conf);
    OPENSSL_free(file);
    return ok;
}
