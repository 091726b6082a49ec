# veil_embed_migrations(<target> <service>)
#
# Compiles db/<service>/NNN_<name>.sql into <target> as a table of
# veil_migration entries named <service>_migrations, so that a service binary
# carries exactly the schema it was built for and its `migrate` command needs
# no files at run time.  The schema version of the binary is the highest NNN.
function(veil_embed_migrations target service)
  set(dir ${PROJECT_SOURCE_DIR}/db/${service})
  file(GLOB sqls CONFIGURE_DEPENDS ${dir}/[0-9][0-9][0-9]_*.sql)
  list(SORT sqls)
  set(out ${CMAKE_CURRENT_BINARY_DIR}/${service}_migrations.c)
  # The list travels as one argument: its semicolons must reach the script
  # as semicolons, not split the command line.
  string(REPLACE ";" "$<SEMICOLON>" sqls_arg "${sqls}")
  add_custom_command(
    OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} -DSERVICE=${service} -DOUT=${out}
            "-DSQLS=${sqls_arg}" -P ${PROJECT_SOURCE_DIR}/cmake/embed_migrations.cmake
    DEPENDS ${sqls} ${PROJECT_SOURCE_DIR}/cmake/embed_migrations.cmake
    COMMENT "Embedding ${service} migrations"
    VERBATIM)
  target_sources(${target} PRIVATE ${out})
endfunction()
