# Finds every external library through pkg-config (or a header/library probe where the Debian
# package ships no .pc file) and fails with the Debian package to install.
find_package(PkgConfig REQUIRED)

function(sand_pkg target pcname debpkg)
    pkg_check_modules(${target} IMPORTED_TARGET GLOBAL ${pcname})
    if(NOT ${target}_FOUND)
        message(FATAL_ERROR "missing ${pcname}: install the Debian package '${debpkg}' "
                            "(or run scripts/install-deps.sh)")
    endif()
    add_library(sand::${target} ALIAS PkgConfig::${target})
endfunction()

function(sand_lib target header lib debpkg)
    find_path(${target}_INC ${header})
    find_library(${target}_LIB ${lib})
    if(NOT ${target}_INC OR NOT ${target}_LIB)
        message(FATAL_ERROR "missing ${lib}: install the Debian package '${debpkg}' "
                            "(or run scripts/install-deps.sh)")
    endif()
    add_library(sand_ext_${target} INTERFACE)
    target_include_directories(sand_ext_${target} INTERFACE ${${target}_INC})
    target_link_libraries(sand_ext_${target} INTERFACE ${${target}_LIB})
    add_library(sand::${target} ALIAS sand_ext_${target})
endfunction()

sand_pkg(uv libuv libuv1-dev)
sand_pkg(hiredis hiredis libhiredis-dev)
sand_pkg(rdkafka rdkafka librdkafka-dev)
sand_pkg(jansson jansson libjansson-dev)
sand_pkg(yaml yaml-0.1 libyaml-dev)
sand_pkg(curl libcurl libcurl4-openssl-dev)
sand_pkg(archive libarchive libarchive-dev)
sand_pkg(cmocka cmocka libcmocka-dev)
sand_lib(httpparser http_parser.h http_parser libhttp-parser-dev)

if(SAND_WITH_PYTHON)
    # Debian's CPython, never a pyenv interpreter that may come first on PATH.
    find_program(SAND_PYTHON_CONFIG NAMES python3-config PATHS /usr/bin NO_DEFAULT_PATH)
    if(NOT SAND_PYTHON_CONFIG)
        message(FATAL_ERROR "missing /usr/bin/python3-config: install the Debian package 'python3-dev'")
    endif()
    execute_process(COMMAND ${SAND_PYTHON_CONFIG} --includes OUTPUT_VARIABLE SAND_PY_CFLAGS
                    OUTPUT_STRIP_TRAILING_WHITESPACE)
    execute_process(COMMAND ${SAND_PYTHON_CONFIG} --ldflags --embed OUTPUT_VARIABLE SAND_PY_LDFLAGS
                    OUTPUT_STRIP_TRAILING_WHITESPACE)
    separate_arguments(SAND_PY_CFLAGS)
    separate_arguments(SAND_PY_LDFLAGS)
    add_library(sand_ext_python INTERFACE)
    target_compile_options(sand_ext_python INTERFACE ${SAND_PY_CFLAGS})
    # link items (not options) so libpython follows the objects that need it
    target_link_libraries(sand_ext_python INTERFACE ${SAND_PY_LDFLAGS})
    add_library(sand::python ALIAS sand_ext_python)
    # The static libpython Debian ships for embedding (position independent), for the worker.
    execute_process(COMMAND ${SAND_PYTHON_CONFIG} --configdir OUTPUT_VARIABLE SAND_PY_CONFIGDIR
                    OUTPUT_STRIP_TRAILING_WHITESPACE)
    string(REGEX MATCH "-lpython[0-9.]+" SAND_PY_LIBFLAG "${SAND_PY_LDFLAGS}")
    string(REPLACE "-l" "lib" SAND_PY_LIBNAME "${SAND_PY_LIBFLAG}")
    set(SAND_PY_STATIC "${SAND_PY_CONFIGDIR}/${SAND_PY_LIBNAME}-pic.a")
endif()

# Forking workers (Python, C) link their libraries statically when Debian ships the archives:
# every shared library is five more mappings in the worker, which each fork() copies and each
# instance's exit tears down again (a Python worker: 73 mappings -> 41, fork + exit ~20 % less
# CPU per event; docs/performance.md). sand_static_deps(target [python]) adds them.
option(SAND_STATIC_WORKERS "link the forking grain workers' libraries statically" ON)
set(SAND_STATIC_LIBDIRS /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE} /usr/lib /usr/local/lib)
foreach(lib hiredis jansson yaml expat z)
    find_file(SAND_STATIC_${lib} lib${lib}.a PATHS ${SAND_STATIC_LIBDIRS} NO_DEFAULT_PATH)
endforeach()

function(sand_static_deps target)
    # The code segment on a 2 MiB boundary, alone in its pages: the worker can then move it
    # onto huge pages (runtimes/core/hugetext.c).
    target_link_options(${target} PRIVATE LINKER:-z,max-page-size=0x200000
                        LINKER:-z,separate-code)
    if(NOT SAND_STATIC_WORKERS)
        return()
    endif()
    set(whole)
    foreach(lib hiredis jansson yaml)
        if(NOT SAND_STATIC_${lib})
            message(STATUS "${target}: no lib${lib}.a, linked with the shared libraries")
            return()
        endif()
        list(APPEND whole ${SAND_STATIC_${lib}})
    endforeach()
    set(after)
    if("python" IN_LIST ARGN)
        if(NOT EXISTS "${SAND_PY_STATIC}" OR NOT SAND_STATIC_expat OR NOT SAND_STATIC_z)
            message(STATUS "${target}: no static libpython, linked with the shared one")
        else()
            list(APPEND whole ${SAND_PY_STATIC})
            set(after ${SAND_STATIC_expat} ${SAND_STATIC_z})
        endif()
    endif()
    # Whole archives ahead of everything: the shared copies that follow in the link line then
    # provide nothing and --as-needed leaves them out. Exported (ENABLE_EXPORTS), the static
    # libpython serves the extension modules the worker imports.
    target_link_options(${target} PRIVATE LINKER:--as-needed LINKER:--whole-archive ${whole}
                        LINKER:--no-whole-archive ${after})
endfunction()

if(SAND_WITH_JAVA)
    find_package(Java 17 COMPONENTS Development)
    find_package(JNI)
    if(NOT Java_FOUND OR NOT JNI_FOUND)
        message(FATAL_ERROR "missing a JDK: install the Debian package 'default-jdk-headless' "
                            "(or configure with -DSAND_WITH_JAVA=OFF)")
    endif()
endif()
